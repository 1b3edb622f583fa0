// Central finite differences for checking backward passes.
namespace L2L.TestSupport;

/// <summary>Numerical gradients of scalar functions computed in double precision.</summary>
public static class FiniteDifference
{
    /// <summary>
    /// The gradient of <paramref name="loss"/> at <paramref name="x"/> by central differences.
    /// <paramref name="x"/> is perturbed in place and restored. Use a loss of the form
    /// <c>sum(out * dout)</c> with a random <c>dout</c>, never <c>sum(out)</c>.
    /// </summary>
    public static double[] Gradient(Func<double[], double> loss, double[] x, double eps = 1e-5)
    {
        var grad = new double[x.Length];
        for (var i = 0; i < x.Length; i++)
        {
            var saved = x[i];
            x[i] = saved + eps;
            var plus = loss(x);
            x[i] = saved - eps;
            var minus = loss(x);
            x[i] = saved;
            grad[i] = (plus - minus) / (2 * eps);
        }
        return grad;
    }

    /// <summary><c>sum(out[i] * dout[i])</c>.</summary>
    public static double Dot(ReadOnlySpan<double> output, ReadOnlySpan<double> dout)
    {
        var s = 0.0;
        for (var i = 0; i < output.Length; i++) s += output[i] * dout[i];
        return s;
    }
}
