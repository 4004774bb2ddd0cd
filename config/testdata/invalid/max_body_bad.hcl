plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    max_body = "10 parsecs"
  }
}
