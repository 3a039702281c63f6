#pragma once
// Loopback ports for tests of the distributed code.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace spe::testing {

// A TCP socket bound to a free loopback port (and listening, when asked); returns its descriptor.
inline int bind_loopback(int& port, bool listening = false) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  if (listening) {
    EXPECT_EQ(listen(fd, 1), 0);
  }
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  port = ntohs(address.sin_port);
  return fd;
}

// A port that was free a moment ago.
inline int free_port() {
  int port = 0;
  close(bind_loopback(port));
  return port;
}

}  // namespace spe::testing
