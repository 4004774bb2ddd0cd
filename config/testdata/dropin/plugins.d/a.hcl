service "extra" {
  env = { EXTRA = "1" }
}

plugin "a" {
  image    = "a:latest"
  port     = 8080
  services = ["extra"]
}
