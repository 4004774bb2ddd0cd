plugin "hello" {
  image = "hello:latest"
  build = "examples/hello"
  port  = 8080
}
