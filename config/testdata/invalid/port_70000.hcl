plugin "hello" {
  image = "hello:latest"
  port  = 70000
}
