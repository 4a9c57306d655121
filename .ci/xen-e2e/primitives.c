// primitives: what dom0's basic operations cost on the machine of a
// real-Xen run, measured in dom0 before the rounds, as references for the
// backends' figures (one JSON line prefixed "E2E-PRIMITIVES "). A backend
// in user space pays a system call where a kernel backend pays none, and
// wakes a user thread where a kernel backend wakes a kernel thread; these
// figures say what each of those costs here.
//
//   primitives FILE   FILE: a scratch file (8 MiB, removed at the end)
//
// Figures, each the mean over its loop, in microseconds:
//   null_syscall_us   a system call that does nothing (getppid)
//   preadv_4k_us      a 4 KiB read from FILE's page cache into one buffer
//   preadv_128k_us    a 128 KiB read in 32 buffers of 4 KiB (one indirect
//                     blkif request's worth)
//   memcpy_128k_us    the same bytes copied in user space
//   wake_round_trip_us  two threads of one process handing a byte to each
//                     other through pipes (two wake-ups, four system calls)
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define CHUNK (32 * PAGE)
#define FILE_BYTES (8 * 1024 * 1024)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int there[2], back[2];

static void *echo(void *arg) {
  char c;
  (void)arg;
  while (read(there[0], &c, 1) == 1)
    if (write(back[1], &c, 1) != 1) break;
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: primitives FILE\n");
    return 2;
  }
  const int n = 20000;
  double t = now();
  for (int i = 0; i < n; i++) syscall(SYS_getppid);
  double null_us = (now() - t) / n * 1e6;

  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) die("open");
  char *buf = aligned_alloc(PAGE, 2 * CHUNK);
  if (!buf) die("aligned_alloc");
  memset(buf, 0x5a, 2 * CHUNK);
  for (off_t at = 0; at < FILE_BYTES; at += CHUNK)
    if (pwrite(fd, buf, CHUNK, at) != CHUNK) die("pwrite");

  struct iovec one = {buf, PAGE};
  t = now();
  for (int i = 0; i < n; i++)
    if (preadv(fd, &one, 1, (off_t)(i % (FILE_BYTES / PAGE)) * PAGE) != PAGE) die("preadv");
  double read4k_us = (now() - t) / n * 1e6;

  struct iovec pages[32];
  for (int i = 0; i < 32; i++) pages[i] = (struct iovec){buf + i * PAGE, PAGE};
  const int m = n / 10;
  t = now();
  for (int i = 0; i < m; i++)
    if (preadv(fd, pages, 32, (off_t)(i % (FILE_BYTES / CHUNK)) * CHUNK) != CHUNK) die("preadv");
  double read128k_us = (now() - t) / m * 1e6;

  t = now();
  for (int i = 0; i < m; i++) {
    memcpy(buf + CHUNK, buf, CHUNK);
    __asm__ volatile("" ::: "memory"); // keep every copy
  }
  double copy128k_us = (now() - t) / m * 1e6;

  if (pipe(there) != 0 || pipe(back) != 0) die("pipe");
  pthread_t thread;
  if (pthread_create(&thread, NULL, echo, NULL) != 0) die("pthread_create");
  const int trips = 2000;
  char c = 'x';
  t = now();
  for (int i = 0; i < trips; i++)
    if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1) die("pipe round trip");
  double wake_us = (now() - t) / trips * 1e6;
  close(there[1]);
  pthread_join(thread, NULL);
  unlink(argv[1]);

  printf("E2E-PRIMITIVES {\"null_syscall_us\":%.1f,\"preadv_4k_us\":%.1f,\"preadv_128k_us\":%.1f,"
         "\"memcpy_128k_us\":%.1f,\"wake_round_trip_us\":%.1f}\n",
         null_us, read4k_us, read128k_us, copy128k_us, wake_us);
  return 0;
}
