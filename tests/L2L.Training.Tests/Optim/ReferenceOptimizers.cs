// Plain scalar references for the host optimizer tests, written per element the way PyTorch computes each update
// (Python-float scalars derived in double and rounded once to float; tensor ops in float, in PyTorch's order).
using L2L.Training.Optim;

namespace L2L.Training.Tests.Optim;

internal static class ReferenceOptimizers
{
    /// <summary>One step of any optimizer; <paramref name="m"/> and <paramref name="v"/> are ignored by SGD.</summary>
    public static void Step(OptimizerSettings s, float[] p, float[] g, float[] m, float[] v, int step, float lr, bool decay)
    {
        switch (s.Kind)
        {
            case OptimizerKind.Sgd: Sgd(s, p, g, lr, decay); break;
            case OptimizerKind.AdamW: AdamW(s, p, g, m, v, step, lr, decay); break;
            case OptimizerKind.Lamb: Lamb(s, p, g, m, v, step, lr, decay); break;
            default: throw new ArgumentOutOfRangeException(nameof(s));
        }
    }

    // torch.optim.SGD, momentum 0: d_p = grad.add(param, alpha=wd); param.add_(d_p, alpha=-lr)
    public static void Sgd(OptimizerSettings s, float[] p, float[] g, float lr, bool decay)
    {
        var applyDecay = decay && s.WeightDecay != 0f;
        var negLr = -lr;
        for (var i = 0; i < p.Length; i++)
        {
            var d = g[i];
            if (applyDecay) d = d + s.WeightDecay * p[i];
            p[i] = p[i] + negLr * d;
        }
    }

    // torch.optim.AdamW, single-tensor path
    public static void AdamW(OptimizerSettings s, float[] p, float[] g, float[] m, float[] v, int step, float lr, bool decay)
    {
        var bc1 = 1.0 - Math.Pow(s.Beta1, step);
        var bc2 = 1.0 - Math.Pow(s.Beta2, step);
        var negStepSize = (float)-(lr / bc1);
        var bc2Sqrt = (float)Math.Sqrt(bc2);
        var lerpWeight = (float)(1.0 - s.Beta1);
        var oneMinusBeta2 = (float)(1.0 - s.Beta2);
        var decayFactor = (float)(1.0 - (double)lr * s.WeightDecay);
        for (var i = 0; i < p.Length; i++)
        {
            if (decay) p[i] = p[i] * decayFactor;                                // param.mul_(1 - lr * wd)
            m[i] = m[i] + lerpWeight * (g[i] - m[i]);                             // exp_avg.lerp_(grad, 1 - beta1)
            v[i] = v[i] * s.Beta2;                                                // exp_avg_sq.mul_(beta2)
            v[i] = v[i] + oneMinusBeta2 * g[i] * g[i];                            //   .addcmul_(grad, grad, value=1 - beta2)
            var denom = MathF.Sqrt(v[i]) / bc2Sqrt + s.Epsilon;                   // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
            p[i] = p[i] + negStepSize * m[i] / denom;                             // param.addcdiv_(exp_avg, denom, value=-step_size)
        }
    }

    // LAMB, You et al. 2019, Algorithm 2; norms in double, summed in index order.
    public static void Lamb(OptimizerSettings s, float[] p, float[] g, float[] m, float[] v, int step, float lr, bool decay)
    {
        var applyDecay = decay && s.WeightDecay != 0f;
        var bc1 = (float)(1.0 - Math.Pow(s.Beta1, step));
        var bc2Sqrt = (float)Math.Sqrt(1.0 - Math.Pow(s.Beta2, step));
        var oneMinusBeta1 = (float)(1.0 - s.Beta1);
        var oneMinusBeta2 = (float)(1.0 - s.Beta2);
        var u = new float[p.Length];
        double weightSquares = 0, updateSquares = 0;
        for (var i = 0; i < p.Length; i++)
        {
            m[i] = m[i] + oneMinusBeta1 * (g[i] - m[i]);
            v[i] = v[i] * s.Beta2 + oneMinusBeta2 * g[i] * g[i];
            var r = m[i] / bc1 / (MathF.Sqrt(v[i]) / bc2Sqrt + s.Epsilon);        // mhat / (sqrt(vhat) + eps)
            u[i] = applyDecay ? r + s.WeightDecay * p[i] : r;                    // + lambda * w
            weightSquares += (double)p[i] * p[i];
            updateSquares += (double)u[i] * u[i];
        }
        var wNorm = Math.Sqrt(weightSquares);
        var uNorm = Math.Sqrt(updateSquares);
        var ratio = wNorm > 0 && uNorm > 0 ? wNorm / uNorm : 1.0;
        var scale = (float)-(lr * ratio);
        for (var i = 0; i < p.Length; i++) p[i] = p[i] + scale * u[i];
    }
}
