plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    drain_timeout = "0s"
  }
}
