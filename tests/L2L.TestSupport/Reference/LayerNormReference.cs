// Double-precision reference for layer normalisation forward and backward.
namespace L2L.TestSupport.Reference;

/// <summary>Layer normalisation over rows of (N, C), PyTorch semantics (biased variance, eps inside the sqrt).</summary>
public static class LayerNormReference
{
    /// <summary>Forward: returns output (N, C) and fills <paramref name="mean"/> (N) and <paramref name="rstd"/> (N).</summary>
    public static double[] Forward(double[] input, double[] weight, double[] bias, int n, int c, double eps,
        out double[] mean, out double[] rstd)
    {
        var output = new double[n * c];
        mean = new double[n];
        rstd = new double[n];
        for (var r = 0; r < n; r++)
        {
            var mu = 0.0;
            for (var j = 0; j < c; j++) mu += input[r * c + j];
            mu /= c;
            var variance = 0.0;
            for (var j = 0; j < c; j++) { var d = input[r * c + j] - mu; variance += d * d; }
            variance /= c;
            var rs = 1.0 / Math.Sqrt(variance + eps);
            for (var j = 0; j < c; j++)
                output[r * c + j] = (input[r * c + j] - mu) * rs * weight[j] + bias[j];
            mean[r] = mu;
            rstd[r] = rs;
        }
        return output;
    }

    /// <summary>Forward output only.</summary>
    public static double[] Forward(double[] input, double[] weight, double[] bias, int n, int c, double eps) =>
        Forward(input, weight, bias, n, c, eps, out _, out _);

    /// <summary>Backward: the gradients with respect to input (N, C), weight (C) and bias (C), not accumulated.</summary>
    public static (double[] dInput, double[] dWeight, double[] dBias) Backward(double[] dOutput, double[] input,
        double[] weight, int n, int c, double eps)
    {
        Forward(input, weight, new double[c], n, c, eps, out var mean, out var rstd);
        var dInput = new double[n * c];
        var dWeight = new double[c];
        var dBias = new double[c];
        for (var r = 0; r < n; r++)
        {
            var meanG = 0.0;
            var meanGX = 0.0;
            for (var j = 0; j < c; j++)
            {
                var xhat = (input[r * c + j] - mean[r]) * rstd[r];
                var g = dOutput[r * c + j] * weight[j];
                meanG += g;
                meanGX += g * xhat;
                dWeight[j] += dOutput[r * c + j] * xhat;
                dBias[j] += dOutput[r * c + j];
            }
            meanG /= c;
            meanGX /= c;
            for (var j = 0; j < c; j++)
            {
                var xhat = (input[r * c + j] - mean[r]) * rstd[r];
                var g = dOutput[r * c + j] * weight[j];
                dInput[r * c + j] = rstd[r] * (g - meanG - xhat * meanGX);
            }
        }
        return (dInput, dWeight, dBias);
    }
}
