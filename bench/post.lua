-- wrk script for bench/callgrind.sh: the FastAPI POST workload's request.
wrk.method = "POST"
wrk.body = '{"name":"widget","price":9.99,"quantity":3,"tags":["a","b","c"]}'
wrk.headers["Content-Type"] = "application/json"
