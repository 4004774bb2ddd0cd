plugin "p" {
  image = "p:latest"
  port  = 8080
  supervisor {
    egress = "some"
  }
}
