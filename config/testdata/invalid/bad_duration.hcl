plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    stop_timeout = "5 minutes"
  }
}
