service "kv" {
  builtin = "kv"
}

plugin "root" {
  image    = "root:latest"
  port     = 8080
  services = ["kv", "extra"]
}
