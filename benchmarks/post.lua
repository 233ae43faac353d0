-- wrk script: every request is POST {"input": 7} as JSON (the benchmark's trivial workload).
wrk.method = "POST"
wrk.body = '{"input": 7}'
wrk.headers["Content-Type"] = "application/json"
