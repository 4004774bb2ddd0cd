service "settings" {
  env     = { A = "b" }
  headers = { Authorization = "x" }
}
