plugin "other" {
  image = "other:latest"
  port  = 8080
}

plugin "hello" {
  image = "hello:latest"
  port  = 8080
}
