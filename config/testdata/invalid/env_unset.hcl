plugin "hello" {
  image = "hello:latest"
  port  = 8080
  env   = { TOKEN = env("XCORE_TEST_SURELY_UNSET_VARIABLE") }
}
