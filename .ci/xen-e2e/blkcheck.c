// blkcheck: the disk workload of the real-Xen end-to-end run. Statically
// linked so that it runs in the busybox domU and in dom0 alike. Every job
// prints one JSON line prefixed "E2E-JOB ", which the host collects.
//
//   blkcheck DEV write-pattern MIB SEED   writes a seeded pattern, O_DIRECT + fsync
//   blkcheck DEV verify-pattern MIB SEED  reads it back (O_DIRECT on a block device)
//   blkcheck DEV seqwrite SECONDS         1 MiB O_DIRECT writes, wrapping at the end
//   blkcheck DEV seqread SECONDS          1 MiB O_DIRECT reads, wrapping at the end
//   blkcheck DEV randread SECONDS THREADS 4 KiB O_DIRECT reads at depth 1 per thread
//
// The pattern is a function of (seed, byte offset), so dom0 can check the
// image it served with the same program and no copy of the data.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static const char *dev;
static uint64_t dev_bytes;
static double seconds;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "blkcheck: %s: %s\n", what, strerror(errno));
  printf("E2E-JOB {\"job\":\"error\",\"what\":\"%s\",\"errno\":%d}\n", what, errno);
  exit(1);
}

static void *aligned(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 4096, n) != 0) die("posix_memalign");
  return p;
}

// O_DIRECT where the file allows it (a block device, most file systems);
// a plain open otherwise (dom0 checks its image on tmpfs).
static int open_dev(int flags) {
  int fd = open(dev, flags | O_DIRECT);
  if (fd < 0 && errno == EINVAL) fd = open(dev, flags);
  if (fd < 0) die("open");
  return fd;
}

static uint64_t size_of(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) die("open for size");
  uint64_t bytes = 0;
  struct stat st;
  if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
    if (fstat(fd, &st) != 0) die("fstat");
    bytes = (uint64_t)st.st_size;
  }
  close(fd);
  return bytes;
}

// The pattern's 8-byte word at a byte offset: splitmix64 of (seed, offset).
static uint64_t pattern_word(uint64_t seed, uint64_t offset) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ULL + offset;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void fill_pattern(uint64_t *buf, uint64_t seed, uint64_t base) {
  for (size_t i = 0; i < MIB / 8; i++) buf[i] = pattern_word(seed, base + i * 8);
}

static int write_pattern(uint64_t mib, uint64_t seed) {
  int fd = open_dev(O_WRONLY);
  uint64_t *buf = aligned(MIB);
  double start = now();
  for (uint64_t m = 0; m < mib; m++) {
    fill_pattern(buf, seed, m * MIB);
    if (pwrite(fd, buf, MIB, (off_t)(m * MIB)) != MIB) die("pwrite pattern");
  }
  if (fsync(fd) != 0) die("fsync");
  close(fd);
  printf("E2E-JOB {\"job\":\"write-pattern\",\"mib\":%llu,\"seed\":%llu,\"secs\":%.2f}\n", (unsigned long long)mib,
         (unsigned long long)seed, now() - start);
  return 0;
}

static int verify_pattern(uint64_t mib, uint64_t seed) {
  int fd = open_dev(O_RDONLY);
  uint64_t *buf = aligned(MIB), *want = aligned(MIB);
  uint64_t bad_words = 0, first_bad = UINT64_MAX;
  for (uint64_t m = 0; m < mib; m++) {
    if (pread(fd, buf, MIB, (off_t)(m * MIB)) != MIB) die("pread pattern");
    fill_pattern(want, seed, m * MIB);
    for (size_t i = 0; i < MIB / 8; i++) {
      if (buf[i] != want[i]) {
        if (first_bad == UINT64_MAX) first_bad = m * MIB + i * 8;
        bad_words++;
      }
    }
  }
  close(fd);
  printf("E2E-JOB {\"job\":\"verify-pattern\",\"mib\":%llu,\"seed\":%llu,\"ok\":%s,\"bad_words\":%llu,\"first_bad\":%lld}\n",
         (unsigned long long)mib, (unsigned long long)seed, bad_words == 0 ? "true" : "false",
         (unsigned long long)bad_words, first_bad == UINT64_MAX ? -1LL : (long long)first_bad);
  return bad_words == 0 ? 0 : 1;
}

static int sequential(int writing) {
  int fd = open_dev(writing ? O_WRONLY : O_RDONLY);
  unsigned char *buf = aligned(MIB);
  memset(buf, 0x5a, MIB);
  uint64_t off = 0, total = 0;
  double start = now(), end = start + seconds;
  while (now() < end) {
    ssize_t n = writing ? pwrite(fd, buf, MIB, (off_t)off) : pread(fd, buf, MIB, (off_t)off);
    if (n != MIB) die(writing ? "pwrite" : "pread");
    total += MIB;
    off += MIB;
    if (off + MIB > dev_bytes) off = 0;
  }
  if (writing && fsync(fd) != 0) die("fsync");
  double el = now() - start;
  close(fd);
  printf("E2E-JOB {\"job\":\"%s-1m\",\"bytes\":%llu,\"secs\":%.2f,\"value\":%.1f,\"unit\":\"MB/s\"}\n",
         writing ? "seqwrite" : "seqread", (unsigned long long)total, el, (double)total / el / 1e6);
  return 0;
}

struct worker {
  pthread_t thread;
  unsigned seed;
  uint64_t ios;
};

static void *random_reads(void *arg) {
  struct worker *w = arg;
  int fd = open_dev(O_RDONLY);
  void *buf = aligned(4096);
  uint64_t blocks = dev_bytes / 4096;
  double end = now() + seconds;
  do {
    for (int i = 0; i < 32; i++) {
      uint64_t b = (((uint64_t)rand_r(&w->seed) << 31) ^ (uint64_t)rand_r(&w->seed)) % blocks;
      if (pread(fd, buf, 4096, (off_t)(b * 4096)) != 4096) die("pread random");
      w->ios++;
    }
  } while (now() < end);
  close(fd);
  return NULL;
}

static int randread(int threads) {
  struct worker w[64];
  if (threads < 1 || threads > 64) threads = 1;
  double start = now();
  for (int i = 0; i < threads; i++) {
    w[i].seed = 1234u + (unsigned)i;
    w[i].ios = 0;
    if (pthread_create(&w[i].thread, NULL, random_reads, &w[i]) != 0) die("pthread_create");
  }
  uint64_t total = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].thread, NULL);
    total += w[i].ios;
  }
  double el = now() - start;
  printf("E2E-JOB {\"job\":\"randread-4k-t%d\",\"ios\":%llu,\"secs\":%.2f,\"value\":%.0f,\"unit\":\"IOPS\"}\n", threads,
         (unsigned long long)total, el, (double)total / el);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 4) {
    fprintf(stderr, "usage: blkcheck DEV write-pattern|verify-pattern MIB SEED | seqwrite|seqread SECONDS | randread SECONDS THREADS\n");
    return 2;
  }
  dev = argv[1];
  const char *job = argv[2];
  dev_bytes = size_of(dev);
  if (dev_bytes < 8 * MIB) {
    fprintf(stderr, "blkcheck: %s is too small (%llu bytes)\n", dev, (unsigned long long)dev_bytes);
    return 2;
  }
  if (!strcmp(job, "write-pattern") || !strcmp(job, "verify-pattern")) {
    if (argc < 5) return 2;
    uint64_t mib = strtoull(argv[3], NULL, 0), seed = strtoull(argv[4], NULL, 0);
    if (mib * MIB > dev_bytes) mib = dev_bytes / MIB;
    return job[0] == 'w' ? write_pattern(mib, seed) : verify_pattern(mib, seed);
  }
  seconds = atof(argv[3]);
  if (!strcmp(job, "seqwrite")) return sequential(1);
  if (!strcmp(job, "seqread")) return sequential(0);
  if (!strcmp(job, "randread")) return randread(argc > 4 ? atoi(argv[4]) : 1);
  fprintf(stderr, "blkcheck: unknown job %s\n", job);
  return 2;
}
