runner {
  admin_listen = "8081"
}
