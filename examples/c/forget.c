/*
 * forget MODEL DATASET_DIR IDS_FILE OUT_DELTA [OPTIONS_JSON]
 *
 * One forget request through qforget's C API: open MODEL, forget the training samples listed in
 * IDS_FILE (0-based ids, one per line) of the idx dataset in DATASET_DIR, write the request as a
 * delta at OUT_DELTA (and its journal entry beside it), and print the same JSON report as
 * `qforget forget --json`. Progress goes to stderr. Exit status: 0 done, 1 refused or failed.
 *
 * Plain C99. Build against the static library (see README.md, "Embedding"):
 *   cc -std=c99 -Wall -Wextra -Iinclude examples/c/forget.c target/release/libqforget.a \
 *      -lpthread -ldl -lm -o forget
 */
#include <stdio.h>
#include <stdlib.h>

#include "qforget.h"

static int fail(const char *what, QfStatus status)
{
    fprintf(stderr, "forget: %s failed (status %d): %s\n", what, (int)status, qf_last_error());
    return 1;
}

static int32_t on_progress(const QfProgress *p, void *user_data)
{
    (void)user_data;
    fprintf(stderr, "\repoch %u/%u step %u/%u loss %.4f", p->epoch + 1, p->epochs, p->step,
            p->steps_per_epoch, (double)p->loss);
    return 0; /* non-zero would cancel the request */
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL DATASET_DIR IDS_FILE OUT_DELTA [OPTIONS_JSON]\n", argv[0]);
        return 2;
    }
    const char *options = argc == 6 ? argv[5] : "{}";
    QfSession session = {0};
    QfRequest request = {0};
    QfResult result = {0};
    QfStatus st;
    int code = 1;

    if (qf_version() == NULL || QF_VERSION_MAJOR != 0) {
        fprintf(stderr, "forget: unexpected qforget version\n");
        return 1;
    }
    if ((st = qf_session_open(argv[1], NULL, 0, &session)) != QF_OK) {
        return fail("qf_session_open", st);
    }
    if ((st = qf_request_new(session, options, &request)) != QF_OK) {
        code = fail("qf_request_new", st);
        goto done;
    }
    if ((st = qf_request_set_dataset(request, argv[2], 0)) != QF_OK) {
        code = fail("qf_request_set_dataset", st);
        goto done;
    }
    if ((st = qf_request_read_forget_ids(request, argv[3])) != QF_OK) {
        code = fail("qf_request_read_forget_ids", st);
        goto done;
    }
    st = qf_request_run(request, on_progress, NULL, &result);
    fputc('\n', stderr);
    if (st != QF_OK) {
        code = fail("qf_request_run", st);
        goto done;
    }
    int refused = 0;
    if ((st = qf_result_refused(result, &refused)) != QF_OK) {
        code = fail("qf_result_refused", st);
        goto done;
    }
    if (!refused && (st = qf_result_write_delta(result, argv[4], NULL)) != QF_OK) {
        code = fail("qf_result_write_delta", st);
        goto done;
    }
    const char *json = NULL;
    if ((st = qf_result_json(result, &json)) != QF_OK) {
        code = fail("qf_result_json", st);
        goto done;
    }
    printf("%s\n", json);
    code = refused ? 1 : 0;
    if (refused) {
        fprintf(stderr, "forget: refused; nothing was written\n");
    }
done:
    qf_result_release(result);
    qf_request_release(request);
    qf_session_release(session);
    return code;
}
