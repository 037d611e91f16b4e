"""The engine: workers.json, the worker client, the cost model, the planner and the dispatcher."""
