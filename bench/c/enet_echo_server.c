//! The plaintext reference for `bench transport`: a minimal ENet echo server on Debian's stock
//! libenet. Each received packet goes back to its sender on the same channel with the same
//! reliability, the way Tavern's bench echo app answers over `EnetServer`.
//!
//! Usage: enet_echo_server <port> <peers> <max_seconds>
//! Binds 127.0.0.1:<port> (0 picks a free port), prints `READY <port>` on stdout, serves until
//! max_seconds have passed or its parent process is gone, then exits. The bench kills it sooner.
//!
//! Build: cc -O2 -std=c11 -o enet_echo_server enet_echo_server.c $(pkg-config --cflags --libs libenet)

#define _POSIX_C_SOURCE 200809L

#include <enet/enet.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Echoes one received packet and frees it. */
static void echo(ENetEvent *event) {
    ENetPacket *in = event->packet;
    enet_uint32 flags = in->flags & (ENET_PACKET_FLAG_RELIABLE | ENET_PACKET_FLAG_UNSEQUENCED);
    ENetPacket *out = enet_packet_create(in->data, in->dataLength, flags);
    if (out != NULL && enet_peer_send(event->peer, event->channelID, out) < 0) {
        enet_packet_destroy(out);
    }
    enet_packet_destroy(in);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <port> <peers> <max_seconds>\n", argv[0]);
        return 64;
    }
    int port = atoi(argv[1]);
    int peers = atoi(argv[2]);
    double max_seconds = atof(argv[3]);
    if (port < 0 || port > 65535 || peers < 1 || peers > 4095 || max_seconds <= 0) {
        fprintf(stderr, "enet_echo_server: bad arguments\n");
        return 64;
    }
    if (enet_initialize() != 0) {
        fprintf(stderr, "enet_echo_server: enet_initialize failed\n");
        return 1;
    }
    atexit(enet_deinitialize);

    ENetAddress address;
    enet_address_set_host_ip(&address, "127.0.0.1");
    address.port = (enet_uint16)port;
    /* Two channels (0 reliable, 1 unreliable) like Tavern's servers; no bandwidth limits. */
    ENetHost *host = enet_host_create(&address, (size_t)peers, 2, 0, 0);
    if (host == NULL) {
        fprintf(stderr, "enet_echo_server: cannot bind 127.0.0.1:%d\n", port);
        return 1;
    }
    ENetAddress bound;
    if (enet_socket_get_address(host->socket, &bound) != 0) {
        bound = host->address;
    }
    printf("READY %u\n", (unsigned)bound.port);
    fflush(stdout);

    pid_t parent = getppid();
    double deadline = now_s() + max_seconds;
    unsigned long checks = 0;
    for (;;) {
        ENetEvent event;
        int r = enet_host_service(host, &event, 10);
        int idle = r == 0;
        while (r > 0) {
            if (event.type == ENET_EVENT_TYPE_RECEIVE) {
                echo(&event);
            }
            r = enet_host_check_events(host, &event);
        }
        if (r < 0) {
            fprintf(stderr, "enet_echo_server: enet_host_service failed\n");
            break;
        }
        /* The clock and the parent are checked every 1024 passes and on idle passes. */
        if ((++checks & 1023) == 0 || idle) {
            if (now_s() > deadline || getppid() != parent) {
                break;
            }
        }
    }
    enet_host_destroy(host);
    return 0;
}
