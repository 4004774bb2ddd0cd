plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    restart {
      backoff     = "10s"
      max_backoff = "1s"
    }
  }
}
