// Double-precision reference for GELU forward and backward: the tanh approximation and the exact (erf) form.
using MathNet.Numerics;

namespace L2L.TestSupport.Reference;

/// <summary>GELU in GPT-2's tanh approximation (<see cref="Forward"/>, <see cref="Backward"/>) and exact (<see cref="ForwardErf"/>, <see cref="BackwardErf"/>).</summary>
public static class GeluReference
{
    private static readonly double S = Math.Sqrt(2.0 / Math.PI);

    /// <summary><c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c> element-wise.</summary>
    public static double[] Forward(double[] input) =>
        input.Select(x => 0.5 * x * (1.0 + Math.Tanh(S * (x + 0.044715 * x * x * x)))).ToArray();

    /// <summary><c>dOutput * gelu'(input)</c> element-wise.</summary>
    public static double[] Backward(double[] dOutput, double[] input)
    {
        var result = new double[input.Length];
        for (var i = 0; i < input.Length; i++)
        {
            var x = input[i];
            var t = Math.Tanh(S * (x + 0.044715 * x * x * x));
            var sech2 = 1.0 - t * t;
            var local = 0.5 * (1.0 + t) + (sech2 == 0 ? 0.0 : 0.5 * x * sech2 * S * (1.0 + 3.0 * 0.044715 * x * x));
            result[i] = dOutput[i] * local;
        }
        return result;
    }

    /// <summary>The standard normal CDF, 0.5 erfc(-x / sqrt 2), in double (MathNet's erfc, accurate to about 1e-15).</summary>
    public static double NormalCdf(double x) => 0.5 * SpecialFunctions.Erfc(-x / Math.Sqrt(2.0));

    /// <summary><c>x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))</c> element-wise.</summary>
    public static double[] ForwardErf(double[] input) => input.Select(x => x * NormalCdf(x)).ToArray();

    /// <summary><c>dOutput * (Phi(x) + x phi(x))</c> element-wise.</summary>
    public static double[] BackwardErf(double[] dOutput, double[] input)
    {
        var result = new double[input.Length];
        for (var i = 0; i < input.Length; i++)
        {
            var x = input[i];
            var pdf = Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI);
            result[i] = dOutput[i] * (NormalCdf(x) + (pdf == 0 ? 0.0 : x * pdf));
        }
        return result;
    }
}
