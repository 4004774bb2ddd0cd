plugin "b" {
  image = "b:latest"
  port  = 8080
}
