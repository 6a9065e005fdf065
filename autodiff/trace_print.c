/* Seeing a trace: a program's recording as a listing (one op per line with
 * the shape of its result) and as a Graphviz DOT graph. */
#include <stdlib.h>
#include <string.h>

#include "trace_internal.h"

static const char *guard_word(int code) {
  return code == TR_GUARD_TRUTH ? "truth" : "bits";
}

/* The op's name without the "ad_" prefix of the public function. */
static const char *op_name(int code) {
  if (code >= TR_GUARD_BITS) return guard_word(code);
  return ad__ops[code].name;
}

static void put_shape(FILE *f, const tr_shape *s) {
  fputc('(', f);
  for (int d = 0; d < s->ndim; d++)
    fprintf(f, "%s%lld", d ? ", " : "", (long long)s->dims[d]);
  fputs(s->ndim == 1 ? ",)" : ")", f);
}

/* Listing numbers: %N for every value the program keeps, inputs first. */
static int32_t *number_values(const tr_prog *p, int64_t *count) {
  const tr_rec *r = p->rec;
  int32_t *id = malloc(((size_t)r->nvals + 1) * sizeof *id);
  if (!id) return NULL;
  for (int64_t v = 0; v < r->nvals; v++) id[v] = -1;
  int32_t n = 0;
  for (int i = 0; i < r->nin; i++)
    for (int64_t v = 0; v < r->nvals; v++)
      if (r->vals[v].kind == TV_INPUT && r->vals[v].src == i) id[v] = n++;
  for (int64_t k = 0; k < r->nops; k++) {
    uint8_t kd = p->op_kind[k];
    if (kd != K_DEAD && kd != K_GUARD) id[r->ops[k].out] = n++;
  }
  *count = n;
  return id;
}

static void put_operand(FILE *f, const tr_rec *r, const int32_t *id,
                        int32_t v) {
  const tr_val *val = &r->vals[v];
  if (val->kind == TV_CONST) {
    const ad_tensor *t = r->consts[val->src];
    if (t->numel == 1) {
      fprintf(f, "%.17g", t->data[0]);
    } else {
      fputs("const", f);
      put_shape(f, &r->shapes.v[val->shape]);
    }
  } else {
    fprintf(f, "%%%d", id[v]);
  }
}

static void put_attr(FILE *f, int code, const ad__attr *a) {
  if (!a) return;
  switch (code) {
  case AD__OP_add_scalar: case AD__OP_mul_scalar: case AD__OP_pow_scalar:
  case AD__OP_scaled_mul:
    fprintf(f, " s=%.17g", a->s0);
    break;
  case AD__OP_clip:
    fprintf(f, " lo=%.17g hi=%.17g", a->s0, a->s1);
    break;
  case AD__OP_sum: case AD__OP_mean: case AD__OP_prod: case AD__OP_max:
  case AD__OP_min: case AD__OP_logsumexp:
    if (a->naxes == 0) {
      fputs(" axes=all", f);
    } else {
      fputs(" axes=[", f);
      for (int i = 0; i < a->naxes; i++)
        fprintf(f, "%s%d", i ? ", " : "", a->axes[i]);
      fputc(']', f);
    }
    if (a->keepdims) fputs(" keepdims", f);
    break;
  case AD__OP_reshape: case AD__OP_broadcast_to: {
    tr_shape s = {.ndim = a->ndim};
    memcpy(s.dims, a->shape, sizeof s.dims);
    fputs(" shape=", f);
    put_shape(f, &s);
    break;
  }
  case AD__OP_permute:
    fputs(" perm=[", f);
    for (int i = 0; i < AD_MAX_DIMS && (i == 0 || a->perm[i]); i++)
      fprintf(f, "%s%d", i ? ", " : "", a->perm[i]);
    fputc(']', f);
    break;
  case AD__OP_slice:
    fprintf(f, " axis=%d %lld:%lld:%lld", a->axis, (long long)a->start,
            (long long)a->stop, (long long)a->step);
    break;
  case AD__OP_slice_grad:
    fprintf(f, " axis=%d start=%lld step=%lld", a->axis,
            (long long)a->start, (long long)a->step);
    break;
  case AD__OP_gather: case AD__OP_scatter_add:
    fprintf(f, " axis=%d n=%lld", a->axis, (long long)a->n);
    break;
  case AD__OP_softmax: case AD__OP_log_softmax: case AD__OP_argmax:
  case AD__OP_expand_dims: case AD__OP_squeeze: case AD__OP_concat:
  case AD__OP_stack:
    fprintf(f, " axis=%d", a->axis);
    break;
  case AD__OP_conv2d: case AD__OP_conv2d_input_grad:
  case AD__OP_conv2d_filter_grad: case AD__OP_max_pool2d:
  case AD__OP_max_pool2d_scatter: case AD__OP_max_pool2d_select:
    fprintf(f, " k=[%lld, %lld, %lld, %lld]", (long long)a->k[0],
            (long long)a->k[1], (long long)a->k[2], (long long)a->k[3]);
    break;
  default:
    break;
  }
}

static const char *kind_note(uint8_t kind) {
  switch (kind) {
  case K_ALIAS: return "  [alias]";
  case K_SCATTER: return "  [in place]";
  case K_FOLDED: return "  [folded into the next in-place add]";
  case K_KERNEL: return "  [kernel]";
  default: return "";
  }
}

ad_status tr_prog_print(const tr_prog *p, FILE *f) {
  const tr_rec *r = p->rec;
  int64_t count;
  int32_t *id = number_values(p, &count);
  if (!id) return ad__error(AD_ENOMEM, "ad_function_print: out of memory");
  fprintf(f, ": %lld op%s, %lld guard%s, %lld instruction%s\n",
          (long long)p->nops, p->nops == 1 ? "" : "s", (long long)p->nguards,
          p->nguards == 1 ? "" : "s", (long long)p->ncode,
          p->ncode == 1 ? "" : "s");
  for (int i = 0; i < r->nin; i++)
    for (int64_t v = 0; v < r->nvals; v++)
      if (r->vals[v].kind == TV_INPUT && r->vals[v].src == i) {
        int w = fprintf(f, "  %%%d = input %d", id[v], i);
        fprintf(f, "%*s", w < 44 ? 44 - w : 1, "");
        put_shape(f, &r->shapes.v[r->vals[v].shape]);
        fputc('\n', f);
      }
  for (int64_t k = 0; k < r->nops; k++) {
    const tr_op *op = &r->ops[k];
    uint8_t kd = p->op_kind[k];
    if (kd == K_DEAD) continue;
    /* Build the line in a memory stream to pad the shape column. */
    char line[512];
    FILE *m = fmemopen(line, sizeof line, "w");
    if (!m) {
      free(id);
      return ad__error(AD_ENOMEM, "ad_function_print: out of memory");
    }
    if (kd == K_GUARD) {
      fprintf(m, "  guard ");
      put_operand(m, r, id, r->ins[op->in]);
      if (op->code == TR_GUARD_TRUTH) {
        fprintf(m, " is %s", op->attr ? "true" : "false");
      } else if (op->code == TR_GUARD_BITS) {
        fprintf(m, " == %.17g (bits)", r->dpool[op->attr]);
      } else {
        const tr_shape *s = tr_val_shape(r, r->ins[op->in]);
        fprintf(m, " == the %lld values read", (long long)s->numel);
      }
    } else {
      fprintf(m, "  %%%d = %s(", id[op->out], op_name(op->code));
      int shown = op->nin > 8 ? 8 : op->nin;
      for (int i = 0; i < shown; i++) {
        if (i) fputs(", ", m);
        put_operand(m, r, id, r->ins[op->in + i]);
      }
      if (shown < op->nin) fprintf(m, ", ... %d inputs", op->nin);
      fputc(')', m);
      put_attr(m, op->code, op->attr >= 0 ? r->attrs[op->attr] : NULL);
    }
    fclose(m);
    line[sizeof line - 1] = 0;
    int w = (int)strlen(line);
    fputs(line, f);
    if (kd != K_GUARD) {
      fprintf(f, "%*s", w < 44 ? 44 - w : 1, "");
      put_shape(f, &r->shapes.v[r->vals[op->out].shape]);
      fputs(kind_note(kd), f);
    }
    fputc('\n', f);
  }
  fputs("  return ", f);
  for (int j = 0; j < p->nout; j++) {
    if (j) fputs(", ", f);
    put_operand(f, r, id, p->out_vals[j]);
  }
  fputc('\n', f);
  (void)count;
  free(id);
  return AD_OK;
}

static void dot_label(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
}

ad_status tr_prog_dot(const tr_prog *p, FILE *f, const char *name) {
  const tr_rec *r = p->rec;
  int64_t count;
  int32_t *id = number_values(p, &count);
  if (!id) return ad__error(AD_ENOMEM, "ad_function_write_dot: out of memory");
  char shape[AD__SHAPE_STR];
  fprintf(f, "digraph trace {\n  rankdir=TB;\n  label=\"");
  dot_label(f, name);
  fprintf(f, "f: %lld ops, %lld guards\";\n  node [fontname=\"Helvetica\"];\n",
          (long long)p->nops, (long long)p->nguards);
  for (int64_t v = 0; v < r->nvals; v++)
    if (r->vals[v].kind == TV_INPUT && id[v] >= 0) {
      const tr_shape *s = &r->shapes.v[r->vals[v].shape];
      fprintf(f,
              "  v%d [shape=ellipse, style=filled, fillcolor=lightblue, "
              "label=\"input %d\\n%s\"];\n",
              id[v], r->vals[v].src, ad__shape_str(shape, s->ndim, s->dims));
    }
  for (int64_t k = 0; k < r->nops; k++) {
    const tr_op *op = &r->ops[k];
    uint8_t kd = p->op_kind[k];
    if (kd == K_DEAD) continue;
    char node[32];
    if (kd == K_GUARD) {
      snprintf(node, sizeof node, "g%lld", (long long)k);
      fprintf(f, "  %s [shape=diamond, style=filled, fillcolor=khaki, "
                 "label=\"guard %s\"];\n",
              node, guard_word(op->code));
    } else {
      const tr_shape *s = tr_val_shape(r, op->out);
      snprintf(node, sizeof node, "v%d", id[op->out]);
      fprintf(f, "  %s [shape=box, label=\"", node);
      dot_label(f, op_name(op->code));
      fprintf(f, "\\n%s\"%s];\n", ad__shape_str(shape, s->ndim, s->dims),
              kd == K_SCATTER ? ", style=dashed" : "");
    }
    for (int i = 0; i < op->nin; i++) {
      int32_t v = r->ins[op->in + i];
      const tr_val *val = &r->vals[v];
      if (val->kind == TV_CONST) {
        const ad_tensor *t = r->consts[val->src];
        fprintf(f, "  c%lld_%d [shape=plaintext, fontcolor=gray40, label=\"",
                (long long)k, i);
        if (t->numel == 1)
          fprintf(f, "%.6g", t->data[0]);
        else
          fprintf(f, "const %s", ad__shape_str(shape, t->ndim, t->shape));
        fprintf(f, "\"];\n  c%lld_%d -> %s [color=gray60];\n", (long long)k,
                i, node);
      } else {
        fprintf(f, "  v%d -> %s;\n", id[v], node);
      }
    }
  }
  for (int j = 0; j < p->nout; j++) {
    int32_t v = p->out_vals[j];
    fprintf(f, "  out%d [shape=ellipse, style=filled, fillcolor=palegreen, "
               "label=\"output %d\"];\n",
            j, j);
    if (r->vals[v].kind != TV_CONST) fprintf(f, "  v%d -> out%d;\n", id[v], j);
  }
  fprintf(f, "}\n");
  (void)count;
  free(id);
  return AD_OK;
}
