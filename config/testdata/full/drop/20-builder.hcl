plugin "builder" {
  build = "../examples/builder" # relative to this file
  port  = 3000

  supervisor {
    egress = ["10.0.0.0/8", "fd00::/8"]
  }
}
