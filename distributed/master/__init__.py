"""Pure helpers of the webui master: the payload allow-list, preflight, the fleet manager and its views."""
