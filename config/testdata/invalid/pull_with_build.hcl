plugin "hello" {
  build = "../../../examples/hello"
  pull  = "always"
  port  = 8080
}
