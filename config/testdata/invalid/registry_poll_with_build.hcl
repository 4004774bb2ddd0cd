plugin "hello" {
  build = "../../../examples/hello"
  registry_poll = "1m"
  port  = 8080
}
