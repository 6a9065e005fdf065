/* Building and training models: layers that hold their variables, model
 * containers, losses, input pipelines, metrics, checkpoints and training
 * feedback, in the style of TensorFlow's eager Keras and tf.data. */
#ifndef AD_NN_H
#define AD_NN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ad/autodiff.h"
#include "ad/optim.h"
#include "ad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Overview
 *
 * A layer is an object that holds variables (ad_var) and maps a tensor to
 * a tensor.  Its variables are created lazily, on the first call, from the
 * shape of the first input, so a model needs no input shape up front.  A
 * model is a layer that contains layers (and other models): by default it
 * calls them in order (a sequential model), and it lists the variables of
 * everything it contains, depth first in the order the layers were added,
 * each layer's kernel before its bias.  That order is stable: the same
 * program builds the same list, which optimizers and checkpoints rely on.
 *
 *   ad_layer *model = ad_model_new("mlp");
 *   ad_model_add(model, ad_layer_dense(64, AD_ACT_RELU, true));
 *   ad_model_add(model, ad_layer_dense(10, AD_ACT_LINEAR, true));
 *   ad_tape *tape = ad_tape_begin(0);
 *   ad_tensor *loss = ad_loss_sparse_softmax_cross_entropy(
 *       ad_layer_call(model, x, true), labels);
 *   ad_tape_end(tape);
 *   ad_var *vars[4];
 *   int64_t n = ad_layer_variables(model, AD_VARS_TRAINABLE, vars, 4);
 *   ad_tensor *grads[4];
 *   ad_tape_var_gradients(tape, loss, (int)n, vars, grads);
 *   ad_tape_free(tape);
 *   ... an optimizer (ad/optim.h) applies grads to vars ...
 *   ad_layer_free(model);
 *
 * Conventions of this header:
 * - Tensors a call returns belong to the innermost open scope, as
 *   everywhere in libad; tensors passed in are borrowed (objects that keep
 *   one take their own reference).
 * - A failing call returns NULL, -1 or a non-zero ad_status and records a
 *   message naming the call and the value at fault (ad_error_message()).
 *   A NULL tensor argument keeps the error that produced it.
 * - Objects (layers, datasets, iterators, metrics, logs) belong to one
 *   thread at a time: calls on the same object must not overlap.  Distinct
 *   objects may be used from different threads at once.  The tensors they
 *   return are immutable and may be shared freely.
 * ---------------------------------------------------------------------- */

/* ------------------------------------------------------------------------
 * Layers
 * ---------------------------------------------------------------------- */

/* A layer or a model (a layer that contains layers); opaque.  Create with
 * an ad_layer_* constructor or ad_model_new, free with ad_layer_free. */
typedef struct ad_layer ad_layer;

/* The activation applied to a layer's output. */
typedef enum ad_activation {
  AD_ACT_LINEAR = 0, /* none: the identity */
  AD_ACT_RELU = 1,   /* max(x, 0) */
  AD_ACT_TANH = 2,
  AD_ACT_SIGMOID = 3,
  AD_ACT_SOFTMAX = 4 /* softmax over the last axis */
} ad_activation;

/* How convolution and pooling treat the borders, as in TensorFlow:
 * AD_PAD_VALID uses only windows that fit inside the input (output size
 * ceil((in - k + 1) / s)); AD_PAD_SAME pads so that the output size is
 * ceil(in / s), splitting the padding evenly and putting an odd one at
 * the bottom and right.  Convolutions pad with zeros, pooling with -inf
 * (padding never wins a maximum). */
typedef enum ad_padding { AD_PAD_VALID = 0, AD_PAD_SAME = 1 } ad_padding;

/* A fully connected layer: act(x W + b) over the last axis of x.  Input
 * (..., in); kernel W (in, units), created on the first call with Glorot
 * uniform values drawn from the calling thread's generator (ad_seed makes
 * them reproducible); bias b (units,) of zeros when use_bias.  Variables
 * are named "<path>/kernel" and "<path>/bias" (see ad_layer_set_name).
 * NULL with AD_EINVAL for units < 1 or an unknown activation.  Free with
 * ad_layer_free unless it is added to a model. */
ad_layer *ad_layer_dense(int64_t units, ad_activation act, bool use_bias);

/* A 2-d convolution layer: act(conv2d(x, K) + b) for NHWC input
 * (N, H, W, C), a kernel K (kh, kw, C, filters) (HWIO, Glorot uniform) and
 * a bias (filters,) of zeros when use_bias; strides sh, sw; padding as
 * described at ad_padding.  Output (N, OH, OW, filters).  NULL with
 * AD_EINVAL for filters, kh, kw, sh or sw < 1 or an unknown activation or
 * padding.  Calling it on an input whose rank is not 4 is AD_ESHAPE. */
ad_layer *ad_layer_conv2d(int64_t filters, int kh, int kw, int sh, int sw,
                          ad_padding padding, ad_activation act,
                          bool use_bias);

/* Max pooling over kh x kw windows with strides sh, sw of NHWC input.
 * No variables.  NULL with AD_EINVAL for sizes < 1 or unknown padding. */
ad_layer *ad_layer_max_pool2d(int kh, int kw, int sh, int sw,
                              ad_padding padding);

/* Dropout: when called with training true, each element is zeroed with
 * probability rate and the others are scaled by 1 / (1 - rate); with
 * training false it returns its input.  The masks come from the layer's
 * own generator, seeded with seed, so they do not depend on the thread's
 * generator or on other layers.  The generator's position is a
 * non-trainable variable "<path>/rng_step" (shape (), the number of
 * training calls so far), so a checkpoint restores it and a restored run
 * draws the masks the interrupted run would have drawn.  NULL with
 * AD_EINVAL unless 0 <= rate < 1. */
ad_layer *ad_layer_dropout(double rate, uint64_t seed);

/* Flattens every axis after the first: (N, d1, d2, ...) -> (N, d1*d2*...).
 * A rank-1 input (N,) gives (N, 1); a rank-0 input is AD_ESHAPE. */
ad_layer *ad_layer_flatten(void);

/* Call the layer (or model) on x; training selects training behaviour
 * (Dropout).  The first call creates the layer's variables from x's shape;
 * later calls need a compatible shape (AD_ESHAPE names the layer and both
 * shapes).  Variables are read with ad_var_value, so tapes that record
 * watch them.  Returns the output, owned by the current scope, or NULL. */
ad_tensor *ad_layer_call(ad_layer *layer, ad_tensor *x, bool training);

/* Create the variables by calling the layer once, with recording paused
 * and training false, on zeros of the given input shape (batch axis
 * included).  Useful before ad_checkpoint_restore, which needs the
 * variables to exist.  A layer that is already built is left alone
 * (AD_OK). */
ad_status ad_layer_build(ad_layer *layer, int ndim, const int64_t *shape);

/* Flag for ad_layer_variables: list only variables that training should
 * update (every variable except Dropout's rng_step). */
#define AD_VARS_TRAINABLE 1u

/* The variables of the layer and everything it contains, in the stable
 * order described in the overview: writes the first min(count, cap) into
 * out (borrowed handles, valid while the layer lives; out may be NULL when
 * cap is 0) and returns the count, 0 before the first call.  flags: 0 for
 * all variables, AD_VARS_TRAINABLE for trainable ones.  -1 with AD_EINVAL
 * for a NULL layer or a negative cap. */
int64_t ad_layer_variables(const ad_layer *layer, unsigned flags,
                           ad_var **out, int64_t cap);

/* The number of scalar parameters in the layer's variables (flags as for
 * ad_layer_variables), or -1 for NULL. */
int64_t ad_layer_num_params(const ad_layer *layer, unsigned flags);

/* The layer's name: the model's name, or the kind ("dense", "conv2d",
 * "max_pool2d", "dropout", "flatten") made unique among its siblings with
 * a suffix ("dense", "dense_1", ...).  Owned by the layer.  "" for NULL. */
const char *ad_layer_name(const ad_layer *layer);

/* Rename a layer that has no variables yet (AD_ESTATE afterwards: variable
 * names are fixed when they are created).  name must be non-empty, at most
 * 255 bytes and without '/' (AD_EINVAL); it is copied.  Inside a model, a
 * name used by a sibling is AD_EINVAL. */
ad_status ad_layer_set_name(ad_layer *layer, const char *name);

/* The kind of layer: "dense", "conv2d", "max_pool2d", "dropout",
 * "flatten" or "model".  Static storage; "" for NULL. */
const char *ad_layer_kind(const ad_layer *layer);

/* Write a summary: one line per layer (indented by nesting) with its
 * name, kind, last output shape and parameter count, then the totals.
 * AD_EINVAL for NULL arguments, AD_EIO when writing fails. */
ad_status ad_layer_summary(FILE *f, const ad_layer *layer);

/* Free a layer that does not belong to a model, with everything it
 * contains, and release its variables (a tape that saw one keeps it alive
 * until the tape is freed).  NULL-safe.  A layer added to a model belongs
 * to it: freeing it directly does nothing and records AD_ESTATE. */
void ad_layer_free(ad_layer *layer);

/* ------------------------------------------------------------------------
 * Models: containers of layers
 *
 * A variable is named after the path of layer names from the outermost
 * model that contains the layer when its variables are created, e.g.
 * "cnn/conv2d_1/kernel".  Names are unique inside one model, so a
 * checkpoint can match variables by name.
 * ---------------------------------------------------------------------- */

/* A custom forward function for a model: compute the output from x by
 * calling the model's layers (ad_model_layer) and any ops.  Returns a
 * tensor owned by the current scope, or NULL after recording an error. */
typedef ad_tensor *(*ad_model_fn)(ad_layer *model, ad_tensor *x,
                                  bool training, void *ctx);

/* An empty model named name (copied; NULL or "" gives "model"; the rules
 * of ad_layer_set_name apply).  Until ad_model_set_call gives it a
 * function it is sequential: it calls its layers in order, and with no
 * layers it returns its input.  NULL on a bad name or out of memory. */
ad_layer *ad_model_new(const char *name);

/* Append layer (or a model: models nest) to model, which takes ownership.
 * If layer's name is used by a sibling, the layer is renamed with the
 * first free suffix _1, _2, ... (a layer that already has variables keeps
 * its name and is refused instead, AD_EINVAL).  Errors: AD_EINVAL when
 * model is NULL or not a model; AD_ESTATE when layer already belongs to a
 * model or contains model (a cycle).  On those two AD_ESTATE errors the
 * layer is left to its owner; on every other error it is freed, so that
 * ad_model_add(m, ad_layer_dense(...)) never leaks.  A NULL layer keeps
 * the error that produced it. */
ad_status ad_model_add(ad_layer *model, ad_layer *layer);

/* Replace the sequential behaviour by fn (ctx is passed through and must
 * outlive the model's calls).  fn NULL restores the sequential call. */
ad_status ad_model_set_call(ad_layer *model, ad_model_fn fn, void *ctx);

/* The number of layers directly inside the model, and the i-th of them
 * (borrowed, owned by the model); -1 / NULL with AD_EINVAL for a layer
 * that is not a model or an index out of range. */
int ad_model_num_layers(const ad_layer *model);
ad_layer *ad_model_layer(const ad_layer *model, int i);

/* ------------------------------------------------------------------------
 * Losses
 *
 * Each returns a rank-0 tensor (the mean over the examples), owned by the
 * current scope, differentiable to any order in the predictions.
 * ---------------------------------------------------------------------- */

/* mean((pred - target)^2) over every element.  The shapes must be equal
 * (AD_ESHAPE): a (N, 1) prediction against (N,) targets would otherwise
 * broadcast to an (N, N) error matrix. */
ad_tensor *ad_loss_mse(ad_tensor *pred, ad_tensor *target);

/* Softmax cross-entropy from logits (..., C) against labels of the same
 * shape holding probabilities (one-hot rows, or soft labels):
 * mean over rows of -sum(labels * log_softmax(logits)).  Computed through
 * log_softmax, so logits of any size give finite results.  Labels are
 * constants: no gradient flows into them. */
ad_tensor *ad_loss_softmax_cross_entropy(ad_tensor *logits,
                                         ad_tensor *labels);

/* The same with integer class labels: logits (..., C), labels shaped like
 * logits without its last axis, holding whole numbers 0..C-1 (stored as
 * doubles); mean over rows of -log_softmax(logits)[label].  A label that
 * is not a whole number in range is AD_EINVAL naming its position. */
ad_tensor *ad_loss_sparse_softmax_cross_entropy(ad_tensor *logits,
                                                ad_tensor *labels);

/* ------------------------------------------------------------------------
 * Datasets: input pipelines in the style of tf.data
 *
 * A dataset is a recipe for a sequence of elements; each element is a
 * tuple of ad_dataset_num_components(ds) tensors.  Transformations build a
 * new dataset from a source and take over the caller's reference to the
 * source, so a pipeline is written as one expression and freed once:
 *
 *   ad_dataset *ds = ad_dataset_batch(ad_dataset_shuffle(
 *       ad_dataset_from_tensor_slices(2, (ad_tensor *[]){x, y}),
 *       1000, 42), 32, false);
 *   ...
 *   ad_dataset_free(ds);
 *
 * Every transformation given a NULL source returns NULL and keeps the
 * error; one that fails releases its source.  To use a dataset in two
 * pipelines, ad_dataset_retain it first.  The pipeline runs with tape
 * recording paused: its ops are never differentiated.
 * ---------------------------------------------------------------------- */

/* A pipeline (reference-counted) and one pass over it; both opaque. */
typedef struct ad_dataset ad_dataset;
typedef struct ad_iterator ad_iterator;

/* The elements are the slices along axis 0 of the n tensors (1 <= n <=
 * 16), which must all have rank >= 1 and the same first dimension
 * (AD_ESHAPE); element i is (ts[0][i], ..., ts[n-1][i]).  The tensors are
 * retained, not copied. */
ad_dataset *ad_dataset_from_tensor_slices(int n, ad_tensor *const *ts);

/* A callback for ad_dataset_map: set out[0..nout) from in[0..n) (tensors
 * owned by the current scope, as libad calls return them) and return
 * AD_OK, or return an error status (after recording a message with a
 * failing libad call, or not: then a generic one is recorded). */
typedef ad_status (*ad_dataset_map_fn)(int n, ad_tensor *const *in,
                                       ad_tensor **out, void *ctx);

/* Apply fn to every element, producing elements of nout components
 * (1 <= nout <= 16).  ctx must outlive the dataset's iterators. */
ad_dataset *ad_dataset_map(ad_dataset *src, int nout, ad_dataset_map_fn fn,
                           void *ctx);

/* Shuffle with a buffer, as tf.data does: the buffer is filled with the
 * first buffer_size elements, and each output is a uniformly chosen buffer
 * entry, replaced by the next input.  buffer_size >= the dataset's size
 * gives a uniform permutation.  The order depends only on seed and on the
 * pass: the k-th iterator of a dataset (pass k) shuffles differently from
 * the one before, and the same seed and pass give the same order in every
 * run (see ad_dataset_iter_pass).  AD_EINVAL for buffer_size < 1. */
ad_dataset *ad_dataset_shuffle(ad_dataset *src, int64_t buffer_size,
                               uint64_t seed);

/* Stack batch_size consecutive elements along a new first axis (the
 * components of the elements of a batch must have equal shapes, or the
 * iterator fails with AD_ESHAPE).  The last, smaller batch is kept unless
 * drop_remainder.  AD_EINVAL for batch_size < 1. */
ad_dataset *ad_dataset_batch(ad_dataset *src, int64_t batch_size,
                             bool drop_remainder);

/* The source's elements count times over (count < 0: forever; 0: none).
 * Each repetition is a new pass of the source, so a shuffle before the
 * repeat reshuffles every time. */
ad_dataset *ad_dataset_repeat(ad_dataset *src, int64_t count);

/* The number of components of each element; -1 for NULL. */
int ad_dataset_num_components(const ad_dataset *ds);

/* The number of elements, AD_INFINITE for a dataset that repeats forever
 * (and is not empty), or -1 for NULL. */
#define AD_INFINITE INT64_MAX
int64_t ad_dataset_cardinality(const ad_dataset *ds);

/* Take one more reference (returns ds) / drop one (freeing the pipeline
 * with the last).  Iterators hold their own references.  NULL-safe. */
ad_dataset *ad_dataset_retain(ad_dataset *ds);
void ad_dataset_free(ad_dataset *ds);

/* An iterator over one pass of ds: ad_dataset_iter gives pass 0, 1, 2,
 * ... on successive calls on the same dataset; ad_dataset_iter_pass gives
 * pass k explicitly (to resume a training run at epoch k with the order
 * the interrupted run would have used).  NULL for NULL ds or out of
 * memory.  Free with ad_iter_free. */
ad_iterator *ad_dataset_iter(ad_dataset *ds);
ad_iterator *ad_dataset_iter_pass(ad_dataset *ds, uint64_t pass);

/* The next element into out[0..num_components) (tensors owned by the
 * current scope) and true; false at the end of the pass or on an error,
 * with out[] set to NULL.  ad_iter_status tells them apart:
 *
 *   ad_tensor *b[2];
 *   while (ad_iter_next(it, b)) { ... }
 *   if (ad_iter_status(it) != AD_OK) ... ad_error_message() ...
 *
 * After the end or an error, later calls return false. */
bool ad_iter_next(ad_iterator *it, ad_tensor **out);

/* AD_OK while iterating and after a normal end; the error that stopped
 * the iterator otherwise.  AD_EINVAL for NULL. */
ad_status ad_iter_status(const ad_iterator *it);

/* Free the iterator (and its references to the pipeline).  NULL-safe. */
void ad_iter_free(ad_iterator *it);

/* Read a CSV file of numbers into a (rows, columns) tensor owned by the
 * current scope: fields separated by commas, lines by "\n" or "\r\n",
 * skip_rows leading lines (a header) ignored, blank lines ignored.  A path
 * ending in ".gz" is decompressed by running `gzip -dc` (gzip must be on
 * PATH).  AD_EIO for a file that cannot be read (with the system's
 * reason), AD_EINVAL naming the line and column of a field that is not a
 * number or a row whose length differs from the first's. */
ad_tensor *ad_load_csv(const char *path, int64_t skip_rows);

/* ------------------------------------------------------------------------
 * Metrics: running statistics over batches (Keras metrics)
 * ---------------------------------------------------------------------- */

/* A running statistic; opaque.  Create with ad_metric_mean or
 * ad_metric_accuracy, free with ad_metric_free. */
typedef struct ad_metric ad_metric;

/* The (weighted) mean of every value given to ad_metric_update.  name is
 * copied (NULL gives "mean").  Free with ad_metric_free. */
ad_metric *ad_metric_mean(const char *name);

/* The fraction of correct predictions (NULL name gives "accuracy"). */
ad_metric *ad_metric_accuracy(const char *name);

/* Add a batch.  Reads the values (a copy); the tensors are not kept.
 * Mean: a holds values (any shape); b is NULL or weights of a's shape
 *   (AD_ESHAPE otherwise); the result is sum(w * a) / sum(w).  A NaN
 *   value makes the mean NaN, as a diverging loss should show.
 * Accuracy: a holds labels, b predictions, in one of three layouts:
 *   b has one more axis than a: a holds class ids, b scores (logits or
 *     probabilities); a prediction is the argmax of b's last axis;
 *   equal shapes of rank >= 2: a one-hot (or probability) rows, b scores;
 *     both are reduced with argmax over the last axis;
 *   equal shapes of rank <= 1: class ids on both sides.
 *   AD_ESHAPE for other shapes, AD_EINVAL for a label that is not finite.
 * AD_EINVAL for NULL arguments (b may be NULL only for Mean).  The metric
 * is unchanged on error. */
ad_status ad_metric_update(ad_metric *m, ad_tensor *a, ad_tensor *b);

/* The current result (0 when nothing was added); NaN for NULL. */
double ad_metric_result(const ad_metric *m);

/* Mean: the total weight added (the number of values when unweighted);
 * Accuracy: the number of predictions.  NaN for NULL. */
double ad_metric_count(const ad_metric *m);

/* Forget everything added.  NULL records AD_EINVAL. */
void ad_metric_reset(ad_metric *m);

/* The name given at creation ("" for NULL). */
const char *ad_metric_name(const ad_metric *m);

/* Free the metric.  NULL-safe. */
void ad_metric_free(ad_metric *m);

/* ------------------------------------------------------------------------
 * Checkpoints
 *
 * A checkpoint file holds named tensors: the values of variables and,
 * optionally, an optimizer's state.  Layout (little-endian integers,
 * IEEE-754 binary64 values), version 1:
 *
 *   offset  size  field
 *   0       8     magic: the bytes 0x89 'A' 'D' 'C' 'K' 'P' 'T' '\n'
 *   8       4     u32 format version (1)
 *   12      4     u32 number of entries E
 *   16      8     u64 length in bytes of the entries that follow
 *   24      ...   E entries, each:
 *                   u8   kind: 0 variable, 1 optimizer state
 *                   u8   rank r (0..8)
 *                   u16  name length L (1..4096)
 *                   L    name bytes (no terminating NUL)
 *                   8r   i64 shape
 *                   8n   f64 values, row-major (n = product of the shape)
 *   end-4   4     u32 CRC-32 (IEEE 802.3, as zlib's crc32) of every byte
 *                 before it
 *
 * Writes are atomic: the file is written to a temporary file in the same
 * directory, flushed to disk (fsync), renamed over path, and the directory
 * is synced; a crash leaves either the old file or the new one.
 * Restoring is all or nothing: the whole file is read and checked (magic,
 * version, length, checksum, every entry) and matched against the
 * variables (and optimizer) before anything changes, so a missing,
 * truncated, corrupted or mismatched file gives an error and leaves every
 * variable and the optimizer as they were.
 * ---------------------------------------------------------------------- */

/* Save the values of vars[0..n) under their names (ad_var_name: each must
 * be non-empty, at most 4096 bytes, and unique among the n, AD_EINVAL)
 * and, when opt is not NULL, the optimizer's state.  Reading the values
 * is not recorded by tapes.  AD_EIO (with the system's reason) when the
 * file cannot be written; the old file, if any, is then untouched. */
ad_status ad_checkpoint_save(const char *path, int64_t n,
                             ad_var *const *vars, ad_optimizer *opt);

/* Restore vars[0..n) and, when opt is not NULL, the optimizer's state
 * from a file written by ad_checkpoint_save.  Every variable must be in
 * the file under its name with its current shape, and every variable in
 * the file must be among vars; the optimizer's state must be present and
 * must fit the optimizer (when opt is NULL, optimizer entries in the file
 * are ignored).  Errors: AD_EIO for a file that cannot be read, is
 * truncated, is not a checkpoint or fails its checksum; AD_EINVAL for
 * missing or extra names; AD_ESHAPE for a shape that differs.  The
 * message names the file and the entry at fault.  On any error nothing is
 * changed. */
ad_status ad_checkpoint_restore(const char *path, int64_t n,
                                ad_var *const *vars,
                                ad_optimizer *opt);

/* ------------------------------------------------------------------------
 * Training feedback
 * ---------------------------------------------------------------------- */

/* One epoch's figures for ad_progress_print. */
typedef struct ad_progress {
  int64_t epoch;          /* 1-based epoch number */
  int64_t epochs;         /* total epochs, or 0 when unknown */
  int64_t step;           /* optimizer steps taken so far, in all */
  double loss;            /* the epoch's mean training loss */
  const char *metric;     /* a metric's name, or NULL for none */
  double metric_value;    /* its value */
  double examples;        /* examples processed in the epoch */
  double seconds;         /* the epoch's wall-clock time */
} ad_progress;

/* Write one line such as (here wrapped)
 *   "epoch  3/20  step    135  loss 0.1234  accuracy 0.9650
 *       20512 examples/s  0.07 s\n"
 * and flush f.  The metric part is left out when p->metric is NULL and
 * the total when p->epochs is 0; examples/s is examples / seconds.
 * AD_EINVAL for NULL arguments, AD_EIO when writing fails. */
ad_status ad_progress_print(FILE *f, const ad_progress *p);

/* An open CSV log of scalars; opaque. */
typedef struct ad_csv_log ad_csv_log;

/* Create (or truncate) a CSV file whose header is "step" followed by the
 * ncols column names (1 <= ncols <= 64; names must not contain commas,
 * quotes or newlines).  NULL with AD_EIO or AD_EINVAL.  Close with
 * ad_csv_log_close. */
ad_csv_log *ad_csv_log_open(const char *path, int ncols,
                            const char *const *columns);

/* Append the row "step,v0,v1,..." (values with 17 significant digits; NaN
 * writes an empty field, for a value not measured at that step) and flush
 * it, so that the file can be plotted while training runs. */
ad_status ad_csv_log_row(ad_csv_log *log, int64_t step,
                         const double *values);

/* Close the file; AD_EIO if a buffered write failed.  NULL-safe. */
ad_status ad_csv_log_close(ad_csv_log *log);

#ifdef __cplusplus
}
#endif
#endif /* AD_NN_H */
