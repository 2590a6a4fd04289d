/* The CPU this binary was built for, against the CPU it runs on (see build.rs).
 *
 * The default build targets the build machine's CPU (-C target-cpu=native, and llama.cpp's
 * -march=native). Copied to a CPU without one of those features it would die with SIGILL, and
 * before main: llama.cpp's C++ static constructors already use AVX-512 when built for it. So this
 * check runs from .preinit_array, before every constructor and before Rust's runtime, and is
 * compiled for the x86-64 baseline (build.rs), so that it runs anywhere to say what is missing.
 *
 * The host's features come from the kernel (/proc/cpuinfo), which lists a feature only when the
 * CPU has it and the kernel enabled its registers. Only libc's plain calls are used here. */

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* "rustname:kernelname ..." for every feature the build enabled, written by build.rs. */
#ifndef LEAFRESH_BUILT_FEATURES
#error "build.rs defines LEAFRESH_BUILT_FEATURES"
#endif

/* Whatever -march the rest of the build (or CFLAGS) asks for, this code runs on any x86-64 CPU. */
#define BASELINE __attribute__((target("arch=x86-64")))

BASELINE static void say(const char *text) {
    ssize_t ignored = write(2, text, strlen(text));
    (void)ignored;
}

/* Whether `word` (length n) is one of the space-separated words of `line`. */
BASELINE static int has_word(const char *line, const char *word, size_t n) {
    const char *at = line;
    while ((at = strstr(at, word)) != NULL) {
        int starts = at == line || at[-1] == ' ' || at[-1] == '\t';
        char after = at[n];
        if (starts && (after == ' ' || after == '\t' || after == '\n' || after == '\0')) {
            return 1;
        }
        at += n;
    }
    return 0;
}

BASELINE static void leafresh_check_host_cpu(void) {
    static char cpuinfo[1 << 16];
    int fd = open("/proc/cpuinfo", O_RDONLY);
    if (fd < 0) {
        return; /* no /proc: nothing to compare with */
    }
    size_t len = 0;
    ssize_t got;
    while (len < sizeof cpuinfo - 1 && (got = read(fd, cpuinfo + len, sizeof cpuinfo - 1 - len)) > 0) {
        len += (size_t)got;
    }
    close(fd);
    cpuinfo[len] = '\0';
    /* The first processor's "flags" line, ended at its newline. */
    char *flags = strstr(cpuinfo, "\nflags");
    if (flags == NULL || (flags = strchr(flags, ':')) == NULL) {
        return;
    }
    flags += 1;
    char *end = strchr(flags, '\n');
    if (end != NULL) {
        *end = '\0';
    }
    static char missing[1024];
    size_t missing_len = 0;
    const char *entry = LEAFRESH_BUILT_FEATURES;
    while (*entry != '\0') {
        const char *colon = strchr(entry, ':');
        const char *stop = strchr(entry, ' ');
        if (stop == NULL) {
            stop = entry + strlen(entry);
        }
        if (colon == NULL || colon > stop) {
            break;
        }
        char kernel[64];
        size_t n = (size_t)(stop - colon - 1);
        if (n > 0 && n < sizeof kernel) {
            memcpy(kernel, colon + 1, n);
            kernel[n] = '\0';
            size_t name = (size_t)(colon - entry);
            if (!has_word(flags, kernel, n) && missing_len + name + 3 < sizeof missing) {
                if (missing_len > 0) {
                    memcpy(missing + missing_len, ", ", 2);
                    missing_len += 2;
                }
                memcpy(missing + missing_len, entry, name);
                missing_len += name;
                missing[missing_len] = '\0';
            }
        }
        entry = *stop == ' ' ? stop + 1 : stop;
    }
    if (missing_len > 0) {
        say("error: this binary was built for a CPU with ");
        say(missing);
        say(", which this host's CPU lacks (/proc/cpuinfo): it would stop with an illegal "
            "instruction. Build it on this machine (scripts/build), or once for x86-64 CPUs "
            "with AVX2 (scripts/build --cpu x86-64-v3)\n");
        _exit(1);
    }
}

/* Run before the C++ constructors (.init_array) and before main. */
__attribute__((section(".preinit_array"), used))
static void (*const leafresh_host_cpu_check)(void) = leafresh_check_host_cpu;
