plugin "hello" {
  image = "team/hello:1.4"
  port  = 8080
  registry_poll = "100ms"
}
