/* The baseline for scripts/bench: plain C over rabbitmq-c, no Swift.
 *   raw_amqp publish HOST PORT QUEUE COUNT SIZE   persistent messages, confirms read every 1,000
 *   raw_amqp consume HOST PORT QUEUE COUNT        prefetch 500, one multiple-ack every 100
 * Prints the rate in messages per second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void check(amqp_rpc_reply_t r, const char *what) {
    if (r.reply_type != AMQP_RESPONSE_NORMAL) { fprintf(stderr, "%s failed\n", what); exit(1); }
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: raw_amqp publish|consume HOST PORT QUEUE COUNT [SIZE]\n"); return 2; }
    const char *mode = argv[1], *host = argv[2], *queue = argv[4];
    int port = atoi(argv[3]);
    long count = atol(argv[5]);
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (amqp_socket_open(sock, host, port)) { fprintf(stderr, "connect failed\n"); return 1; }
    check(amqp_login(conn, "/", 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    amqp_channel_open(conn, 1);
    check(amqp_get_rpc_reply(conn), "channel.open");
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn), "queue.declare");

    double start = now();
    if (strcmp(mode, "publish") == 0) {
        int size = argc > 6 ? atoi(argv[6]) : 200;
        char *body = malloc(size);
        memset(body, 'x', size);
        amqp_confirm_select(conn, 1);
        check(amqp_get_rpc_reply(conn), "confirm.select");
        amqp_basic_properties_t props;
        props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
        props.delivery_mode = 2;
        props.content_type = amqp_cstring_bytes("application/json");
        amqp_bytes_t payload = {size, body};
        uint64_t confirmed = 0;
        for (long i = 1; i <= count; i++) {
            if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, &props, payload)) {
                fprintf(stderr, "publish failed\n"); return 1;
            }
            if (i % 1000 == 0 || i == count) {
                while (confirmed < (uint64_t)i) {
                    amqp_frame_t frame;
                    if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) { fprintf(stderr, "wait failed\n"); return 1; }
                    if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                        amqp_basic_ack_t *ack = frame.payload.method.decoded;
                        confirmed = ack->multiple ? ack->delivery_tag : (ack->delivery_tag > confirmed ? ack->delivery_tag : confirmed);
                    }
                    amqp_maybe_release_buffers(conn);
                }
            }
        }
    } else {
        amqp_basic_qos(conn, 1, 0, 500, 0);
        amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        check(amqp_get_rpc_reply(conn), "basic.consume");
        for (long i = 1; i <= count; i++) {
            amqp_envelope_t env;
            amqp_maybe_release_buffers(conn);
            if (amqp_consume_message(conn, &env, NULL, 0).reply_type != AMQP_RESPONSE_NORMAL) { fprintf(stderr, "consume failed\n"); return 1; }
            if (i % 100 == 0 || i == count) amqp_basic_ack(conn, 1, env.delivery_tag, 1);
            amqp_destroy_envelope(&env);
        }
    }
    double elapsed = now() - start;
    printf("%.0f\n", count / elapsed);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
