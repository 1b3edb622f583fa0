// Double-precision references for PyTorch's AdamW and SGD (no momentum) steps.
namespace L2L.TestSupport.Reference;

/// <summary>Optimizer steps in double, following torch.optim.AdamW / SGD.</summary>
public static class OptimizerReference
{
    /// <summary>
    /// One AdamW step at 1-based <paramref name="step"/>, in place: decoupled decay first, then the moments,
    /// then <c>p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)</c>.
    /// </summary>
    public static void AdamW(double[] param, double[] grad, double[] m, double[] v, int step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        var bc1 = 1.0 - Math.Pow(beta1, step);
        var bc2 = 1.0 - Math.Pow(beta2, step);
        for (var i = 0; i < param.Length; i++)
        {
            param[i] -= lr * weightDecay * param[i];
            m[i] = beta1 * m[i] + (1 - beta1) * grad[i];
            v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i];
            param[i] -= lr * (m[i] / bc1) / (Math.Sqrt(v[i] / bc2) + eps);
        }
    }

    /// <summary>One SGD step without momentum, in place: <c>p -= lr * (g + wd * p)</c>.</summary>
    public static void Sgd(double[] param, double[] grad, double lr, double weightDecay)
    {
        for (var i = 0; i < param.Length; i++)
            param[i] -= lr * (grad[i] + weightDecay * param[i]);
    }
}
