runner {
  listen       = "127.0.0.1:8080"
  protect_host = "no"
}
