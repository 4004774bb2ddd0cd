plugin "p" {
  image = "p:latest"
  port  = 8080
  supervisor {
    egress = "10.0.0.0/8"
  }
}
