runner {
  registry_poll = "5 minutes"
}
