// netcheck: the network workload of the real-Xen end-to-end run. Statically
// linked so that it runs in the busybox domU and in dom0 alike. Every job of
// the client prints one JSON line prefixed "E2E-JOB ", which the host
// collects.
//
//   netcheck serve PORT              dom0: TCP sink and source, UDP echo
//   netcheck rtt HOST PORT COUNT     UDP echo round trips, one at a time
//   netcheck send HOST PORT SECONDS  TCP to the server for SECONDS
//   netcheck recv HOST PORT SECONDS  TCP from the server for SECONDS
//
// The TCP stream is a function of its byte offset, so the receiving end checks every
// byte it receives: a vif that loses, reorders or corrupts data inside a
// connection is caught, not just measured. A send job ends once the server
// has counted (and checked) every byte, so its rate is what arrived.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "netcheck: %s: %s\n", what, strerror(errno));
  printf("E2E-JOB {\"job\":\"error\",\"what\":\"%s\",\"errno\":%d}\n", what, errno);
  fflush(stdout);
  exit(1);
}

// The stream repeats a table of PERIOD pseudo-random bytes. PERIOD is
// prime, so a segment dropped or repeated inside a connection shifts the
// stream against the table and shows; sending writes straight from the
// table and checking is a memcmp, cheap enough under software emulation.
#define PERIOD 1000003u
static uint8_t *table;

static void make_table(void) {
  table = malloc(PERIOD + CHUNK);
  if (table == NULL) die("malloc");
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < PERIOD + CHUNK; i++) {
    if (i == PERIOD) x = 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    table[i] = (uint8_t)x;
  }
}

static const uint8_t *stream_at(uint64_t offset) { return table + offset % PERIOD; }

static uint64_t count_bad(const uint8_t *buf, size_t n, uint64_t offset) {
  const uint8_t *want = stream_at(offset);
  if (memcmp(buf, want, n) == 0) return 0;
  uint64_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += buf[i] != want[i];
  return bad;
}

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static struct sockaddr_in address(const char *host, const char *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  if (host == NULL) a.sin_addr.s_addr = htonl(INADDR_ANY);
  else if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    errno = EINVAL;
    die("address");
  }
  return a;
}

// One TCP connection of the server: its first byte says what the client
// wants. 'S': the server checks and counts what comes until EOF, then
// answers with the count and the wrong bytes (two little-endian u64). 'G':
// the server sends the stream until the client closes.
static void serve_connection(int fd) {
  uint8_t *buf = malloc(CHUNK);
  char what;
  if (buf == NULL || read(fd, &what, 1) != 1) _exit(1);
  uint64_t offset = 0;
  if (what == 'S') {
    uint64_t bad = 0;
    ssize_t r;
    while ((r = read(fd, buf, CHUNK)) > 0) {
      bad += count_bad(buf, (size_t)r, offset);
      offset += (uint64_t)r;
    }
    uint64_t answer[2] = {offset, bad};
    write_all(fd, answer, sizeof answer);
  } else if (what == 'G') {
    for (;;) {
      if (write_all(fd, stream_at(offset), CHUNK) < 0) break;
      offset += CHUNK;
    }
  }
  _exit(0);
}

static int serve(const char *port) {
  signal(SIGCHLD, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_in a = address(NULL, port);
  int one = 1;
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  if (tcp < 0) die("socket");
  setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(tcp, (struct sockaddr *)&a, sizeof a) < 0 || listen(tcp, 8) < 0) die("tcp bind");
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  if (udp < 0 || bind(udp, (struct sockaddr *)&a, sizeof a) < 0) die("udp bind");
  struct pollfd fds[2] = {{.fd = tcp, .events = POLLIN}, {.fd = udp, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[1].revents & POLLIN) {
      uint8_t d[2048];
      struct sockaddr_in from;
      socklen_t len = sizeof from;
      ssize_t r = recvfrom(udp, d, sizeof d, 0, (struct sockaddr *)&from, &len);
      if (r > 0) sendto(udp, d, (size_t)r, 0, (struct sockaddr *)&from, len);
    }
    if (fds[0].revents & POLLIN) {
      int c = accept(tcp, NULL, NULL);
      if (c < 0) continue;
      if (fork() == 0) {
        close(tcp);
        close(udp);
        serve_connection(c);
      }
      close(c);
    }
  }
  return 0;
}

static int connect_to(const char *host, const char *port, char what) {
  struct sockaddr_in a = address(host, port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  if (write_all(fd, &what, 1) < 0) die("write");
  return fd;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// Round trips of 64-byte datagrams, one in flight: each waits up to a
// second for its own echo (a late echo of an earlier one is skipped).
static int rtt(const char *host, const char *port, int count) {
  struct sockaddr_in a = address(host, port);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("udp connect");
  double *us = calloc((size_t)count, sizeof *us);
  int got = 0;
  for (int seq = 0; seq < count; seq++) {
    uint8_t d[64] = {0};
    memcpy(d, &seq, sizeof seq);
    double t0 = now();
    if (send(fd, d, sizeof d, 0) < 0) die("send");
    for (;;) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      int left = (int)((t0 + 1.0 - now()) * 1000);
      if (left <= 0 || poll(&p, 1, left) <= 0) break;
      uint8_t r[64];
      int echoed;
      if (recv(fd, r, sizeof r, 0) != sizeof r) continue;
      memcpy(&echoed, r, sizeof echoed);
      if (echoed == seq) {
        us[got++] = (now() - t0) * 1e6;
        break;
      }
    }
  }
  qsort(us, (size_t)got, sizeof *us, cmp_double);
  // (got * 99) / 100 < got for any got > 0: both indexes are in range.
  double p50 = got ? us[got / 2] : 0.0, p99 = got ? us[(got * 99) / 100] : 0.0;
  printf("E2E-JOB {\"job\":\"udp-rtt\",\"sent\":%d,\"echoed\":%d,\"p50_us\":%.0f,\"p99_us\":%.0f,\"value\":%.0f}\n", count, got,
         p50, p99, p50);
  return got == count ? 0 : 1;
}

static int send_job(const char *host, const char *port, double secs) {
  signal(SIGPIPE, SIG_IGN);
  int fd = connect_to(host, port, 'S');
  uint64_t sent = 0;
  double t0 = now();
  while (now() - t0 < secs) {
    if (write_all(fd, stream_at(sent), CHUNK) < 0) die("send");
    sent += CHUNK;
  }
  shutdown(fd, SHUT_WR);
  uint64_t answer[2];
  size_t have = 0;
  while (have < sizeof answer) {
    ssize_t r = read(fd, (uint8_t *)answer + have, sizeof answer - have);
    if (r <= 0) die("the server's count");
    have += (size_t)r;
  }
  double t = now() - t0;
  int ok = answer[0] == sent && answer[1] == 0;
  printf("E2E-JOB {\"job\":\"tcp-send\",\"bytes\":%llu,\"received\":%llu,\"bad_bytes\":%llu,\"secs\":%.2f,\"ok\":%s,\"value\":%.1f}\n",
         (unsigned long long)sent, (unsigned long long)answer[0], (unsigned long long)answer[1], t, ok ? "true" : "false",
         (double)answer[0] * 8 / t / 1e6);
  return ok ? 0 : 1;
}

static int recv_job(const char *host, const char *port, double secs) {
  int fd = connect_to(host, port, 'G');
  uint8_t *buf = malloc(CHUNK);
  uint64_t got = 0, bad = 0;
  double t0 = now(), t;
  while ((t = now() - t0) < secs) {
    ssize_t r = read(fd, buf, CHUNK);
    if (r <= 0) die("recv");
    bad += count_bad(buf, (size_t)r, got);
    got += (uint64_t)r;
  }
  close(fd);
  int ok = got > 0 && bad == 0;
  printf("E2E-JOB {\"job\":\"tcp-recv\",\"bytes\":%llu,\"bad_bytes\":%llu,\"secs\":%.2f,\"ok\":%s,\"value\":%.1f}\n", (unsigned long long)got,
         (unsigned long long)bad, t, ok ? "true" : "false", (double)got * 8 / t / 1e6);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  make_table();
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(argv[2]);
  if (argc == 5 && strcmp(argv[1], "rtt") == 0) return rtt(argv[2], argv[3], atoi(argv[4]));
  if (argc == 5 && strcmp(argv[1], "send") == 0) return send_job(argv[2], argv[3], atof(argv[4]));
  if (argc == 5 && strcmp(argv[1], "recv") == 0) return recv_job(argv[2], argv[3], atof(argv[4]));
  fprintf(stderr, "usage: netcheck serve PORT | rtt HOST PORT COUNT | send HOST PORT SECONDS | recv HOST PORT SECONDS\n");
  return 2;
}
