service "kv" {
  builtin = "kv"
}

plugin "hello" {
  image    = "hello:latest"
  port     = 8080
  services = ["kv", "kv"]
}
