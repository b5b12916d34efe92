/*
 * godot_dtls_client.c: a stand-in for a Godot 4 game client in Tavern's CI. It speaks ENet 1.3
 * inside DTLS 1.2, with mbedTLS configured the way Godot 4 configures its ENet DTLS client
 * (modules/mbedtls/tls_context_mbedtls.cpp, packet_peer_mbed_dtls.cpp, thirdparty/enet/enet_godot.cpp),
 * and drives one short session against a Tavern server:
 *
 *   connect -> Hello (reliable, channel 0) -> Welcome -> unreliable + reliable echoes -> disconnect
 *
 * Build (Debian: libenet-dev, libmbedtls-dev, pkg-config; mbedTLS 2.28 or 3.x):
 *
 *   cc -std=c11 -O2 -Wall -Wextra -o godot_dtls_client godot_dtls_client.c \
 *      $(pkg-config --cflags --libs libenet) -lmbedtls -lmbedx509 -lmbedcrypto
 *
 * (`make` in this folder runs the same line; protocol/transport/tests/godot_c_client.rs builds and
 * runs it as a cargo integration test.)
 *
 * Usage: godot_dtls_client HOST PORT CA_PEM SERVER_NAME HELLO_FILE
 *   HOST, PORT   the server's UDP address
 *   CA_PEM       trusted CA chain; Tavern's tests pass the server's own self-signed certificate
 *                (Godot: TLSOptions.client(trusted_chain))
 *   SERVER_NAME  the name checked against the certificate and sent as SNI
 *                (Godot: ENetConnection.dtls_client_setup(hostname, ...))
 *   HELLO_FILE   the bytes of the first message (a FlatBuffers ClientMessage with a Hello body)
 *
 * Environment: TAVERN_CLIENT_TIMEOUT_MS (default 10000) bounds the whole run;
 * TAVERN_DTLS_DEBUG=0..4 turns on mbedTLS's debug output on stderr.
 *
 * Output: `key=value` lines on stdout (cipher=, version=, mtu=, welcome=<hex>, echo_*=<hex>,
 * disconnected). Any failure prints `error=<what>` and exits non-zero:
 * 2 usage or local setup, 3 DTLS handshake (certificate, name, alert), 4 timeout, 5 protocol.
 *
 * Why a relay. Stock ENet 1.3 has no hook on its send path; Godot patches ENet to put its socket
 * behind PacketPeerDTLS. Here ENet talks plaintext UDP to a relay socket on 127.0.0.1 inside this
 * process, and the relay turns every ENet datagram into exactly one DTLS record
 * (mbedtls_ssl_write) and every record read (mbedtls_ssl_read) back into one ENet datagram: the
 * same framing as Godot's ENetDTLSClient::sendto / recvfrom. As in Godot, the DTLS handshake
 * starts lazily on ENet's first send, and ENet datagrams are dropped while it runs (Godot
 * returns ERR_BUSY, so ENet resends its CONNECT on its retransmit timer).
 */
#define _POSIX_C_SOURCE 200809L

#include <enet/enet.h>

#include <mbedtls/version.h>
#if MBEDTLS_VERSION_NUMBER < 0x03000000
#include <mbedtls/config.h>
#else
#include <mbedtls/build_info.h>
#endif
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/ssl.h>
#include <mbedtls/timing.h>
#include <mbedtls/x509_crt.h>
#if defined(MBEDTLS_DEBUG_C)
#include <mbedtls/debug.h>
#endif
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Channel 0 reliable, channel 1 unreliable: Tavern's link layout (transport::Delivery). */
#define CHANNELS 2
#define CH_RELIABLE 0
#define CH_UNRELIABLE 1
/* Godot 4 bundles ENet 1.3.18, whose default MTU is 1392; Debian's 1.3.17 defaults to 1400. */
#define GODOT_ENET_MTU 1392
/* Godot's PacketPeerMbedDTLS reads records into a 64 KiB buffer. */
#define PACKET_BUFFER_SIZE 65536
#define MAX_HELLO_BYTES (64 * 1024)
/* How often, and how many times, an unanswered unreliable packet is sent again. */
#define UNRELIABLE_RETRY_MS 250
#define UNRELIABLE_MAX_SENDS 8
/* How long the server may take to acknowledge our ENet DISCONNECT. On loopback the ACK takes
 * milliseconds; without it ENet only gives up after its peer timeout (5 s or more), and Godot
 * sees an error or a timeout instead of a clean disconnect. */
#define DISCONNECT_ACK_MS 2000
/* Bound on close_notify attempts while the socket would block. */
#define CLOSE_NOTIFY_MAX_TRIES 16

enum exit_code { EXIT_OK = 0, EXIT_SETUP = 2, EXIT_HANDSHAKE = 3, EXIT_TIMEOUT = 4, EXIT_PROTOCOL = 5 };

/* What this run sends after the Welcome; the server echoes each back on the same delivery. */
static const char RELIABLE_PAYLOAD[] = "tavern-c-client reliable ch0";
static const char UNRELIABLE_PAYLOAD[] = "tavern-c-client unreliable ch1 unsequenced";
static const char UNRELIABLE_ORDERED_PAYLOAD[] = "tavern-c-client unreliable ch1 ordered";

/* The connected UDP socket to the server: the stand-in for Godot's PacketPeerUDP. */
struct udp_link {
    int fd;
    int refused; /* an ICMP port-unreachable came back at least once */
};

/* The session's progress, in order. */
enum phase { CONNECTING, AWAIT_WELCOME, AWAIT_ECHOES, DISCONNECTING, DONE };

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int fail(int code, const char *fmt, ...) {
    va_list ap;
    printf("error=");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return code;
}

static const char *tls_error(int ret, char *buf, size_t len) {
    char detail[200];
    mbedtls_strerror(ret, detail, sizeof detail);
    snprintf(buf, len, "-0x%04x %s", (unsigned)-ret, detail);
    return buf;
}

static void print_hex(const char *key, const uint8_t *data, size_t len) {
    printf("%s=", key);
    for (size_t i = 0; i < len; i++) printf("%02x", data[i]);
    printf("\n");
    fflush(stdout);
}

/* mbedTLS BIO over a non-blocking connected UDP socket, like Godot's bio_send/bio_recv on
 * PacketPeerUDP: one datagram per call, WANT_READ/WANT_WRITE when the socket would block. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len) {
    struct udp_link *link = ctx;
    ssize_t n = send(link->fd, buf, len, 0);
    if (n >= 0) return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_WRITE;
    if (errno == ECONNREFUSED) {
        link->refused = 1;
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    }
    return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len) {
    struct udp_link *link = ctx;
    ssize_t n = recv(link->fd, buf, len, 0);
    if (n >= 0) return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_READ;
    if (errno == ECONNREFUSED) {
        /* Nothing listens (yet): keep the handshake's own retransmit timer in charge. */
        link->refused = 1;
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
}

#if defined(MBEDTLS_DEBUG_C)
static void debug_print(void *ctx, int level, const char *file, int line, const char *msg) {
    (void)ctx;
    fprintf(stderr, "mbedtls[%d] %s:%d: %s", level, file, line, msg);
}
#endif

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int connect_udp(const char *host, const char *port, struct udp_link *link) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 && set_nonblocking(fd) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    link->fd = fd;
    link->refused = 0;
    return fd < 0 ? -1 : 0;
}

static long read_file(const char *path, uint8_t *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -1;
    size_t n = fread(buf, 1, cap, f);
    int too_big = n == cap && fgetc(f) != EOF;
    int bad = ferror(f);
    fclose(f);
    return (bad || too_big || n == 0) ? -1 : (long)n;
}

static int send_packet(ENetPeer *peer, enet_uint8 channel, const void *data, size_t len, enet_uint32 flags) {
    ENetPacket *packet = enet_packet_create(data, len, flags);
    if (packet == NULL) return -1;
    if (enet_peer_send(peer, channel, packet) != 0) {
        enet_packet_destroy(packet);
        return -1;
    }
    return 0;
}

static int packet_is(const ENetPacket *packet, const char *expected) {
    size_t len = strlen(expected);
    return packet->dataLength == len && memcmp(packet->data, expected, len) == 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CA_PEM SERVER_NAME HELLO_FILE\n", argv[0]);
        return fail(EXIT_SETUP, "usage");
    }
    const char *host = argv[1], *port = argv[2], *ca_file = argv[3], *server_name = argv[4], *hello_file = argv[5];
    const char *timeout_env = getenv("TAVERN_CLIENT_TIMEOUT_MS");
    uint64_t timeout_ms = timeout_env != NULL ? strtoull(timeout_env, NULL, 10) : 10000;
    if (timeout_ms == 0 || timeout_ms > 120000) timeout_ms = 10000;
    const uint64_t started_at = now_ms(), deadline = started_at + timeout_ms;
    char ebuf[300];
    int ret;

    static uint8_t hello[MAX_HELLO_BYTES];
    long hello_len = read_file(hello_file, hello, sizeof hello);
    if (hello_len < 0) return fail(EXIT_SETUP, "cannot read hello file %s", hello_file);

    /* == TLSContextMbedTLS::_setup(IS_CLIENT, DATAGRAM, VERIFY_REQUIRED) + init_client == */
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_timing_delay_context timer;
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_config_init(&conf);
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_x509_crt_init(&ca);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000 && defined(MBEDTLS_PSA_CRYPTO_C)
    if (psa_crypto_init() != PSA_SUCCESS) return fail(EXIT_SETUP, "psa_crypto_init");
#endif
    if ((ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0)) != 0)
        return fail(EXIT_SETUP, "ctr_drbg_seed: %s", tls_error(ret, ebuf, sizeof ebuf));
    if ((ret = mbedtls_x509_crt_parse_file(&ca, ca_file)) != 0)
        return fail(EXIT_SETUP, "cannot load CA %s: %s", ca_file, tls_error(ret, ebuf, sizeof ebuf));
    if ((ret = mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
        return fail(EXIT_SETUP, "ssl_config_defaults: %s", tls_error(ret, ebuf, sizeof ebuf));
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_ca_chain(&conf, &ca, NULL);
#if MBEDTLS_VERSION_NUMBER < 0x03000000
    /* Godot 4 ships mbedTLS 3.x, which speaks DTLS 1.2 only; 2.28 would also offer DTLS 1.0. */
    mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
#endif
#if defined(MBEDTLS_DEBUG_C)
    const char *debug_env = getenv("TAVERN_DTLS_DEBUG");
    if (debug_env != NULL) {
        mbedtls_debug_set_threshold(atoi(debug_env));
        mbedtls_ssl_conf_dbg(&conf, debug_print, NULL);
    }
#endif
    /* Deliberately not set, as in Godot: ciphersuite list, MTU, handshake timeouts, CID. */
    if ((ret = mbedtls_ssl_setup(&ssl, &conf)) != 0)
        return fail(EXIT_SETUP, "ssl_setup: %s", tls_error(ret, ebuf, sizeof ebuf));
    if ((ret = mbedtls_ssl_set_hostname(&ssl, server_name)) != 0)
        return fail(EXIT_SETUP, "set_hostname: %s", tls_error(ret, ebuf, sizeof ebuf));

    /* == Godot's PacketPeerUDP::connect_to_host, then PacketPeerMbedDTLS::connect_to_peer == */
    struct udp_link udp;
    if (connect_udp(host, port, &udp) != 0) return fail(EXIT_SETUP, "cannot open a UDP socket to %s:%s", host, port);
    mbedtls_ssl_set_bio(&ssl, &udp, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_timer_cb(&ssl, &timer, mbedtls_timing_set_delay, mbedtls_timing_get_delay);

    /* == The relay: ENet sends plaintext to 127.0.0.1:R; R's peer address is learnt from ENet. == */
    int relay = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in relay_addr;
    memset(&relay_addr, 0, sizeof relay_addr);
    relay_addr.sin_family = AF_INET;
    relay_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t relay_len = sizeof relay_addr;
    if (relay < 0 || bind(relay, (struct sockaddr *)&relay_addr, sizeof relay_addr) != 0 ||
        getsockname(relay, (struct sockaddr *)&relay_addr, &relay_len) != 0 || set_nonblocking(relay) != 0)
        return fail(EXIT_SETUP, "cannot bind the relay socket");
    struct sockaddr_in enet_addr;
    memset(&enet_addr, 0, sizeof enet_addr);
    int enet_known = 0;

    /* == ENetConnection::create_host(1, CHANNELS) + connect_to_host(addr, port, CHANNELS) == */
    if (enet_initialize() != 0) return fail(EXIT_SETUP, "enet_initialize");
    ENetAddress local;
    enet_address_set_host(&local, "127.0.0.1");
    local.port = 0;
    /* No bandwidth limits, no compressor, no checksum: Godot's defaults. */
    ENetHost *enet = enet_host_create(&local, 1, CHANNELS, 0, 0);
    if (enet == NULL) return fail(EXIT_SETUP, "enet_host_create");
    /* enet_host_create already reset the peers with the old host MTU, so set both. */
    enet->mtu = GODOT_ENET_MTU;
    for (size_t i = 0; i < enet->peerCount; i++) enet->peers[i].mtu = GODOT_ENET_MTU;
    ENetAddress to;
    enet_address_set_host(&to, "127.0.0.1");
    to.port = ntohs(relay_addr.sin_port);
    ENetPeer *peer = enet_host_connect(enet, &to, CHANNELS, 0);
    if (peer == NULL) return fail(EXIT_SETUP, "enet_host_connect");

    static uint8_t buf[PACKET_BUFFER_SIZE];
    enum phase phase = CONNECTING;
    int dtls_started = 0, dtls_up = 0, dtls_closed = 0;
    uint64_t dtls_started_at = 0, dtls_up_at = 0;
    int got_reliable = 0, got_unreliable = 0, got_unreliable_ordered = 0;
    int unreliable_sends = 0;
    uint64_t last_unreliable_at = 0, disconnect_sent_at = 0;
    unsigned long enet_dropped_while_handshaking = 0, records_out = 0, records_in = 0;

    while (phase != DONE) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            const char *where = phase == CONNECTING
                ? (!dtls_started ? "before enet sent anything"
                   : !dtls_up    ? (udp.refused ? "in the dtls handshake (connection refused)" : "in the dtls handshake")
                                 : "waiting for the enet connect")
                : phase == AWAIT_WELCOME ? "waiting for the welcome"
                : phase == AWAIT_ECHOES  ? (!got_reliable ? "waiting for the reliable echo" : "waiting for the unreliable echoes")
                                         : (dtls_closed ? "waiting for the enet disconnect (the server sent close_notify first)"
                                                        : "waiting for the enet disconnect");
            return fail(EXIT_TIMEOUT, "timeout after %llu ms %s", (unsigned long long)timeout_ms, where);
        }
        if (phase == DISCONNECTING && now - disconnect_sent_at > DISCONNECT_ACK_MS)
            return fail(EXIT_PROTOCOL, "the server did not acknowledge the enet disconnect within %d ms%s", DISCONNECT_ACK_MS,
                        dtls_closed ? " (it sent dtls close_notify without the enet acknowledgement)" : "");

        /* Sleep until any of the three sockets is readable, at most 2 ms: the DTLS and ENet
         * retransmit timers are checked on every pass. */
        struct pollfd fds[3] = {
            {.fd = udp.fd, .events = POLLIN}, {.fd = relay, .events = POLLIN}, {.fd = (int)enet->socket, .events = POLLIN}};
        (void)poll(fds, 3, 2);

        /* ENet: events, timers, and its own sends to the relay. */
        ENetEvent ev;
        int served;
        while ((served = enet_host_service(enet, &ev, 0)) > 0) {
            switch (ev.type) {
            case ENET_EVENT_TYPE_CONNECT:
                if (phase != CONNECTING) return fail(EXIT_PROTOCOL, "unexpected second enet connect");
                printf("enet_connect_ms=%llu\n", (unsigned long long)(now_ms() - started_at));
                printf("mtu=%u\n", (unsigned)peer->mtu);
                printf("channels=%u\n", (unsigned)peer->channelCount);
                fflush(stdout);
                if (send_packet(peer, CH_RELIABLE, hello, (size_t)hello_len, ENET_PACKET_FLAG_RELIABLE) != 0)
                    return fail(EXIT_PROTOCOL, "cannot queue the hello");
                phase = AWAIT_WELCOME;
                break;
            case ENET_EVENT_TYPE_RECEIVE:
                if (phase == AWAIT_WELCOME) {
                    print_hex("welcome", ev.packet->data, ev.packet->dataLength);
                    printf("welcome_channel=%u\n", (unsigned)ev.channelID);
                    /* Godot's TRANSFER_MODE_UNRELIABLE, then TRANSFER_MODE_UNRELIABLE_ORDERED, then reliable. */
                    if (send_packet(peer, CH_UNRELIABLE, UNRELIABLE_PAYLOAD, strlen(UNRELIABLE_PAYLOAD),
                                    ENET_PACKET_FLAG_UNSEQUENCED | ENET_PACKET_FLAG_UNRELIABLE_FRAGMENT) != 0 ||
                        send_packet(peer, CH_UNRELIABLE, UNRELIABLE_ORDERED_PAYLOAD, strlen(UNRELIABLE_ORDERED_PAYLOAD),
                                    ENET_PACKET_FLAG_UNRELIABLE_FRAGMENT) != 0 ||
                        send_packet(peer, CH_RELIABLE, RELIABLE_PAYLOAD, strlen(RELIABLE_PAYLOAD), ENET_PACKET_FLAG_RELIABLE) != 0)
                        return fail(EXIT_PROTOCOL, "cannot queue the echo requests");
                    unreliable_sends = 1;
                    last_unreliable_at = now_ms();
                    phase = AWAIT_ECHOES;
                } else if (phase == AWAIT_ECHOES) {
                    if (!got_reliable && packet_is(ev.packet, RELIABLE_PAYLOAD)) {
                        got_reliable = 1;
                        print_hex("echo_reliable", ev.packet->data, ev.packet->dataLength);
                        printf("echo_reliable_channel=%u\n", (unsigned)ev.channelID);
                    } else if (!got_unreliable && packet_is(ev.packet, UNRELIABLE_PAYLOAD)) {
                        got_unreliable = 1;
                        print_hex("echo_unreliable", ev.packet->data, ev.packet->dataLength);
                        printf("echo_unreliable_channel=%u\n", (unsigned)ev.channelID);
                    } else if (!got_unreliable_ordered && packet_is(ev.packet, UNRELIABLE_ORDERED_PAYLOAD)) {
                        got_unreliable_ordered = 1;
                        print_hex("echo_unreliable_ordered", ev.packet->data, ev.packet->dataLength);
                    } else if (!packet_is(ev.packet, RELIABLE_PAYLOAD) && !packet_is(ev.packet, UNRELIABLE_PAYLOAD) &&
                               !packet_is(ev.packet, UNRELIABLE_ORDERED_PAYLOAD)) {
                        size_t len = ev.packet->dataLength;
                        print_hex("unexpected", ev.packet->data, len);
                        enet_packet_destroy(ev.packet);
                        return fail(EXIT_PROTOCOL, "unexpected packet of %zu bytes on channel %u while awaiting echoes",
                                    len, (unsigned)ev.channelID);
                    }
                    fflush(stdout);
                    if (got_reliable && got_unreliable && got_unreliable_ordered) {
                        printf("unreliable_sends=%d\n", unreliable_sends);
                        enet_peer_disconnect(peer, 0);
                        disconnect_sent_at = now_ms();
                        phase = DISCONNECTING;
                    }
                }
                /* In DISCONNECTING ENet still delivers what was in flight; it is not ours to judge. */
                enet_packet_destroy(ev.packet);
                break;
            case ENET_EVENT_TYPE_DISCONNECT:
                if (phase != DISCONNECTING)
                    return fail(dtls_up ? EXIT_PROTOCOL : EXIT_HANDSHAKE, "enet disconnected by the server (data %u) before the test was done",
                                (unsigned)ev.data);
                printf("disconnect_ms=%llu\n", (unsigned long long)(now_ms() - disconnect_sent_at));
                printf("disconnected\n");
                fflush(stdout);
                phase = DONE;
                break;
            case ENET_EVENT_TYPE_NONE:
                break;
            }
            if (phase == DONE) break;
        }
        if (served < 0) return fail(EXIT_PROTOCOL, "enet_host_service failed");
        if (phase == DONE) break;

        /* Lost unreliable packets are sent again, a bounded number of times. */
        if (phase == AWAIT_ECHOES && (!got_unreliable || !got_unreliable_ordered) &&
            now_ms() - last_unreliable_at >= UNRELIABLE_RETRY_MS) {
            if (unreliable_sends >= UNRELIABLE_MAX_SENDS)
                return fail(EXIT_PROTOCOL, "no unreliable echo after %d sends", unreliable_sends);
            if ((!got_unreliable && send_packet(peer, CH_UNRELIABLE, UNRELIABLE_PAYLOAD, strlen(UNRELIABLE_PAYLOAD),
                                                ENET_PACKET_FLAG_UNSEQUENCED | ENET_PACKET_FLAG_UNRELIABLE_FRAGMENT) != 0) ||
                (!got_unreliable_ordered && send_packet(peer, CH_UNRELIABLE, UNRELIABLE_ORDERED_PAYLOAD,
                                                        strlen(UNRELIABLE_ORDERED_PAYLOAD), ENET_PACKET_FLAG_UNRELIABLE_FRAGMENT) != 0))
                return fail(EXIT_PROTOCOL, "cannot queue an unreliable retry");
            enet_host_flush(enet);
            unreliable_sends++;
            last_unreliable_at = now_ms();
        }

        /* ENet -> DTLS: one datagram, one record (ENetDTLSClient::sendto). */
        for (int i = 0; i < 256; i++) {
            struct sockaddr_in src;
            socklen_t src_len = sizeof src;
            ssize_t n = recvfrom(relay, buf, sizeof buf, 0, (struct sockaddr *)&src, &src_len);
            if (n < 0) break;
            if (!enet_known) {
                enet_addr = src;
                enet_known = 1;
            } else if (src.sin_port != enet_addr.sin_port || src.sin_addr.s_addr != enet_addr.sin_addr.s_addr) {
                continue; /* only our own ENet host talks to the relay */
            }
            if (!dtls_started) {
                /* Godot connects the DTLS peer on ENet's first send, and that send is lost. */
                dtls_started = 1;
                dtls_started_at = now_ms();
            }
            if (!dtls_up) {
                enet_dropped_while_handshaking++;
                continue;
            }
            if (dtls_closed) continue;
            ret = mbedtls_ssl_write(&ssl, buf, (size_t)n);
            if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) continue; /* Godot: dropped */
            if (ret < 0) return fail(EXIT_PROTOCOL, "dtls write: %s", tls_error(ret, ebuf, sizeof ebuf));
            if (ret != (int)n) return fail(EXIT_PROTOCOL, "dtls write took %d of %zd bytes", ret, n);
            records_out++;
        }

        /* The handshake advances on every poll, as PacketPeerMbedDTLS::poll does. */
        if (dtls_started && !dtls_up) {
            ret = mbedtls_ssl_handshake(&ssl);
            if (ret == 0) {
                dtls_up = 1;
                dtls_up_at = now_ms();
                printf("cipher=%s\n", mbedtls_ssl_get_ciphersuite(&ssl));
                printf("version=%s\n", mbedtls_ssl_get_version(&ssl));
                printf("dtls_handshake_ms=%llu\n", (unsigned long long)(dtls_up_at - dtls_started_at));
                printf("mbedtls=%s\n", MBEDTLS_VERSION_STRING);
                fflush(stdout);
            } else if (ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE) {
                uint32_t flags = mbedtls_ssl_get_verify_result(&ssl);
                char info[512] = "";
                if (flags != 0 && flags != (uint32_t)-1) {
                    mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
                    size_t n = strlen(info);
                    while (n > 0 && (info[n - 1] == '\n' || info[n - 1] == ' ')) info[--n] = '\0';
                    for (char *p = info; *p; p++)
                        if (*p == '\n') *p = ';';
                }
                return fail(EXIT_HANDSHAKE, "dtls handshake: %s%s%s", tls_error(ret, ebuf, sizeof ebuf),
                            info[0] ? "; verification: " : "", info);
            }
        }

        /* DTLS -> ENet: one record, one datagram (ENetDTLSClient::recvfrom). */
        for (int i = 0; dtls_up && !dtls_closed && i < 256; i++) {
            ret = mbedtls_ssl_read(&ssl, buf, sizeof buf);
            if (ret > 0) {
                records_in++;
                if (enet_known) sendto(relay, buf, (size_t)ret, 0, (struct sockaddr *)&enet_addr, sizeof enet_addr);
                continue;
            }
            if (ret == 0 || ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) break;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) continue;
#endif
            if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
                /* Records relayed before it may still hold ENet's acknowledgement of our
                 * disconnect: let ENet read them. At any other time it ends the session. */
                if (phase != DISCONNECTING)
                    return fail(EXIT_PROTOCOL, "dtls close_notify from the server before the enet disconnect");
                dtls_closed = 1;
                printf("dtls_close_notify_ms=%llu\n", (unsigned long long)(now_ms() - disconnect_sent_at));
                break;
            }
            return fail(EXIT_PROTOCOL, "dtls read: %s", tls_error(ret, ebuf, sizeof ebuf));
        }
    }

    printf("enet_datagrams_dropped_while_handshaking=%lu\n", enet_dropped_while_handshaking);
    printf("records_out=%lu\nrecords_in=%lu\n", records_out, records_in);
    printf("total_ms=%llu\n", (unsigned long long)(now_ms() - started_at));
    fflush(stdout);

    /* Godot destroys the host after the disconnect: the DTLS peer sends close_notify. */
    for (int i = 0; !dtls_closed && i < CLOSE_NOTIFY_MAX_TRIES && mbedtls_ssl_close_notify(&ssl) == MBEDTLS_ERR_SSL_WANT_WRITE; i++) {
    }
    enet_host_destroy(enet);
    enet_deinitialize();
    close(relay);
    close(udp.fd);
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&conf);
    mbedtls_x509_crt_free(&ca);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return EXIT_OK;
}
