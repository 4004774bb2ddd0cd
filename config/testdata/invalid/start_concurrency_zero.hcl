runner {
  listen = "127.0.0.1:9080"
  start_concurrency = 0
}
