// Double-precision reference matrix products and their gradients, written as plain loops.
using L2L.Backends.Ops;

namespace L2L.TestSupport.Reference;

/// <summary>Reference GEMM, batched GEMM, the gradients of <c>C = A . B</c>, and the bias gradient. All row-major.</summary>
public static class GemmReference
{
    /// <summary>
    /// <c>C (m, n) = alpha * op(A) . op(B) [+ bias (n) broadcast over rows] [+ c0 (m, n)]</c>.
    /// NN: A (m, k), B (k, n). NT: A (m, k), B (n, k). TN: A (k, m), B (k, n).
    /// </summary>
    public static double[] Gemm(double[] a, double[] b, int m, int n, int k, GemmLayout layout,
        double alpha = 1.0, double[]? bias = null, double[]? c0 = null)
    {
        var c = new double[m * n];
        for (var i = 0; i < m; i++)
        {
            for (var j = 0; j < n; j++)
            {
                var sum = 0.0;
                for (var p = 0; p < k; p++)
                {
                    var x = layout == GemmLayout.TN ? a[p * m + i] : a[i * k + p];
                    var y = layout == GemmLayout.NT ? b[j * k + p] : b[p * n + j];
                    sum += x * y;
                }
                var value = alpha * sum;
                if (bias is not null) value += bias[j];
                if (c0 is not null) value += c0[i * n + j];
                c[i * n + j] = value;
            }
        }
        return c;
    }

    /// <summary>
    /// <see cref="Gemm"/> over <paramref name="batch"/> contiguous matrices: A_i at <c>i * m * k</c>,
    /// B_i at <c>i * k * n</c>, C_i (and c0_i) at <c>i * m * n</c>.
    /// </summary>
    public static double[] GemmBatched(double[] a, double[] b, int batch, int m, int n, int k, GemmLayout layout,
        double alpha = 1.0, double[]? c0 = null)
    {
        var c = new double[batch * m * n];
        for (var i = 0; i < batch; i++)
        {
            var ai = a.AsSpan(i * m * k, m * k).ToArray();
            var bi = b.AsSpan(i * k * n, k * n).ToArray();
            var ci = c0?.AsSpan(i * m * n, m * n).ToArray();
            Gemm(ai, bi, m, n, k, layout, alpha, null, ci).CopyTo(c, i * m * n);
        }
        return c;
    }

    /// <summary>
    /// Gradients of <c>loss = sum((A . B) * dC)</c> for A (m, k), B (k, n), dC (m, n):
    /// <c>dA (m, k) = dC . B^T</c> and <c>dB (k, n) = A^T . dC</c>.
    /// </summary>
    public static (double[] DA, double[] DB) GemmBackward(double[] a, double[] b, double[] dC, int m, int n, int k)
    {
        var dA = new double[m * k];
        var dB = new double[k * n];
        for (var i = 0; i < m; i++)
        {
            for (var p = 0; p < k; p++)
            {
                for (var j = 0; j < n; j++)
                {
                    dA[i * k + p] += dC[i * n + j] * b[p * n + j];
                    dB[p * n + j] += a[i * k + p] * dC[i * n + j];
                }
            }
        }
        return (dA, dB);
    }

    /// <summary><c>dBias (n) = dBias0 + column sums of dOut (rows, n)</c>.</summary>
    public static double[] BiasBackward(double[] dOut, int rows, int n, double[]? dBias0 = null)
    {
        var dBias = dBias0 is null ? new double[n] : (double[])dBias0.Clone();
        for (var r = 0; r < rows; r++)
            for (var j = 0; j < n; j++)
                dBias[j] += dOut[r * n + j];
        return dBias;
    }
}
