/* Logistic regression fitted by maximum likelihood on the Wisconsin
 * breast-cancer data (data/breast_cancer.csv) with GSL's vector_bfgs2
 * and libad's gradient. */
#include <ad.h>
#include <ad/gsl.h>
#include <gsl/gsl_blas.h>
#include <gsl/gsl_errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* The ten "mean" features (radius, texture, ..., fractal dimension): with
 * all thirty the two classes are linearly separable and the likelihood
 * has no maximum. */
#define LOGIT_FEATURES 10

/* The design matrix X (a column of ones, then the standardized features)
 * and the labels y (1 benign, 0 malignant). */
typedef struct logit_data {
  ad_tensor *X, *y;
  int64_t rows;
} logit_data;

/* Reads scikit-learn's CSV: a line "rows,features,name0,name1", then one
 * line per example with the features and the class (0 or 1).  Keeps the
 * first LOGIT_FEATURES features, standardized (mean 0, standard deviation
 * 1).  The tensors belong to the current scope.  Returns 0, or -1 with a
 * message on stderr. */
static int logit_load(const char *path, logit_data *d) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    return -1;
  }
  int rows = 0, cols = 0, ok = fscanf(f, "%d,%d,%*s", &rows, &cols) == 2 &&
                                 rows > 0 && cols >= LOGIT_FEATURES;
  const int p = LOGIT_FEATURES + 1;
  double *x = ok ? malloc((size_t)rows * p * sizeof *x) : NULL;
  double *y = ok ? malloc((size_t)rows * sizeof *y) : NULL;
  for (int i = 0; ok && x && y && i < rows; i++) {
    x[i * p] = 1.0;
    for (int j = 0; ok && j < cols; j++) {
      double v;
      ok = fscanf(f, "%lf,", &v) == 1;
      if (j < LOGIT_FEATURES) x[i * p + 1 + j] = v;
    }
    ok = ok && fscanf(f, "%lf", &y[i]) == 1;
  }
  fclose(f);
  if (!ok || !x || !y) {
    fprintf(stderr, "%s: not a scikit-learn data file\n", path);
    free(x);
    free(y);
    return -1;
  }
  for (int j = 1; j < p; j++) {
    double mean = 0, var = 0;
    for (int i = 0; i < rows; i++) mean += x[i * p + j] / rows;
    for (int i = 0; i < rows; i++)
      var += (x[i * p + j] - mean) * (x[i * p + j] - mean) / rows;
    for (int i = 0; i < rows; i++)
      x[i * p + j] = (x[i * p + j] - mean) / sqrt(var);
  }
  d->X = ad_tensor_new(2, (const int64_t[]){rows, p}, x);
  d->y = ad_tensor_new(1, (const int64_t[]){rows}, y);
  d->rows = rows;
  free(x);
  free(y);
  return d->X && d->y ? 0 : -1;
}

/* The negative log-likelihood of the coefficients w:
 * sum_i log(1 + exp(z_i)) - y_i z_i with z = X w. */
static ad_tensor *logit_nll(ad_tensor *w, void *ctx) {
  const logit_data *d = ctx;
  ad_tensor *z = ad_matmul(d->X, w);
  return ad_sum_all(ad_sub(ad_softplus(z), ad_mul(d->y, z)));
}

/* Fits the model with minimizer type T (at most max_iter iterations),
 * printing each iteration to log (NULL: quietly).  The coefficients go to
 * w (LOGIT_FEATURES + 1 values, intercept first), the negative
 * log-likelihood to *nll and the iterations done to *iterations.
 * Returns GSL_SUCCESS when the gradient's norm fell below 1e-4, another
 * GSL status when the minimizer stopped, or GSL_EBADFUNC when libad failed
 * (ad_error_message() says why). */
static int logit_fit(const logit_data *d,
                     const gsl_multimin_fdfminimizer_type *T,
                     size_t max_iter, FILE *log, double *w, double *nll,
                     size_t *iterations) {
  const size_t p = LOGIT_FEATURES + 1;
  *nll = NAN;
  *iterations = 0;
  gsl_multimin_function_fdf fdf;
  if (ad_gsl_multimin_fdf(&fdf, logit_nll, (void *)d, p) != AD_OK)
    return GSL_EBADFUNC;
  gsl_vector *w0 = gsl_vector_calloc(p);
  gsl_multimin_fdfminimizer *s = gsl_multimin_fdfminimizer_alloc(T, p);
  ad_error_clear();
  int status = gsl_multimin_fdfminimizer_set(s, &fdf, w0, 1.0, 0.01);
  size_t iter = 0;
  if (log)
    fprintf(log, "%5s %14s %12s   (%s, %lld examples)\n", "iter",
            "-log L", "|gradient|", gsl_multimin_fdfminimizer_name(s),
            (long long)d->rows);
  if (status == GSL_SUCCESS && ad_error() == AD_OK) {
    do {
      iter++;
      status = gsl_multimin_fdfminimizer_iterate(s);
      if (status || ad_error() != AD_OK) break;
      status = gsl_multimin_test_gradient(s->gradient, 1e-4);
      if (log)
        fprintf(log, "%5zu %14.8f %12.4e\n", iter, s->f,
                gsl_blas_dnrm2(s->gradient));
    } while (status == GSL_CONTINUE && iter < max_iter);
  }
  if (ad_error() != AD_OK) status = GSL_EBADFUNC;
  else if (status == GSL_CONTINUE) status = GSL_EMAXITER;
  for (size_t j = 0; j < p; j++) w[j] = gsl_vector_get(s->x, j);
  *nll = s->f;
  *iterations = iter;
  gsl_multimin_fdfminimizer_free(s);
  gsl_vector_free(w0);
  ad_gsl_multimin_fdf_free(&fdf);
  return status;
}

#ifndef AD_EXAMPLE_NO_MAIN
int main(int argc, char **argv) {
  static const char *names[LOGIT_FEATURES + 1] = {
      "intercept",   "radius",    "texture",        "perimeter",
      "area",        "smoothness", "compactness",   "concavity",
      "concave pts", "symmetry",  "fractal dim"};
  gsl_set_error_handler_off();
  ad_scope_begin();
  logit_data d;
  if (logit_load(argc > 1 ? argv[1] : "data/breast_cancer.csv", &d) != 0)
    return 1;
  double w[LOGIT_FEATURES + 1], nll;
  size_t iterations;
  int status = logit_fit(&d, gsl_multimin_fdfminimizer_vector_bfgs2, 500,
                         stdout, w, &nll, &iterations);
  if (status == GSL_EBADFUNC && ad_error() != AD_OK) {
    fprintf(stderr, "gsl_logistic: %s\n", ad_error_message());
    return 1;
  }
  printf("status = %s\n", gsl_strerror(status));
  printf("maximum log-likelihood = %.8f after %zu iterations\n", -nll,
         iterations);
  for (int j = 0; j <= LOGIT_FEATURES; j++)
    printf("  %-12s % .6f\n", names[j], w[j]);
  /* Training accuracy: predict benign when X w > 0. */
  ad_tensor *z = ad_matmul(d.X, ad_tensor_new(1, (const int64_t[]){
                                                     LOGIT_FEATURES + 1},
                                                 w));
  ad_tensor *right = ad_equal(ad_greater(z, ad_scalar(0.0)), d.y);
  printf("training accuracy = %.4f\n", ad_item(ad_mean(right, 0, NULL, false)));
  ad_scope_end();
  return status == GSL_SUCCESS ? 0 : 1;
}
#endif
