service "settings" {
  url = "http://127.0.0.1:9000"
  env = { A = "b" }
}
