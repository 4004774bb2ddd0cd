service "billing" {
  url = "ftp://billing.internal"
}
