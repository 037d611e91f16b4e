"""`python -m distributed serve`: A1111's /sdapi/v1 in front of the fleet, one queue shared by many clients.

`translate` turns A1111 requests into jobs and results back into A1111 answers; `catalog` is what the fleet offers
(checkpoints, samplers, LoRAs, and which worker has what); `queue` holds the clients' jobs over one shared fleet;
`app` is the HTTP server; `page` the status page.
"""
