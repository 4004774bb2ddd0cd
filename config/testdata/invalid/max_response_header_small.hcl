plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    max_response_header = "512B"
  }
}
