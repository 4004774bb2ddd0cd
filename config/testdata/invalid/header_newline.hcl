service "billing" {
  url     = "http://127.0.0.1:9000"
  headers = { Authorization = "Bearer x\n" }
}
