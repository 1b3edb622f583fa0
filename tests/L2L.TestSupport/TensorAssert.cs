// Element-wise comparison of device results with double-precision references.
using Xunit;

namespace L2L.TestSupport;

/// <summary>Asserts that arrays agree within <c>|a - e| &lt;= atol + rtol * |e|</c> element by element.</summary>
public static class TensorAssert
{
    /// <summary>Fails with the worst element's index and values when any element is out of tolerance or not finite.</summary>
    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double atol, double rtol, string what = "")
    {
        var a = new double[actual.Length];
        for (var i = 0; i < a.Length; i++) a[i] = actual[i];
        Close(expected, a, atol, rtol, what);
    }

    /// <summary>Fails with the worst element's index and values when any element is out of tolerance or not finite.</summary>
    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, double atol, double rtol, string what = "")
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        var worst = -1;
        var worstExcess = 0.0;
        var bad = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            var e = expected[i];
            var x = actual[i];
            var limit = atol + rtol * Math.Abs(e);
            var err = Math.Abs(x - e);
            if (!double.IsFinite(x) || double.IsNaN(err) || err > limit)
            {
                bad++;
                var excess = double.IsFinite(err) ? err / Math.Max(limit, double.Epsilon) : double.PositiveInfinity;
                if (worst < 0 || excess > worstExcess) { worst = i; worstExcess = excess; }
            }
        }
        if (bad > 0)
            Assert.Fail($"{what}: {bad} of {expected.Length} elements out of tolerance (atol {atol:G3}, rtol {rtol:G3}); " +
                $"worst at [{worst}]: got {actual[worst]:G9}, expected {expected[worst]:G9}");
    }

    /// <summary>Fails unless the arrays are equal bit for bit.</summary>
    public static void Equal(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what = "")
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        for (var i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: first difference at [{i}]: got {actual[i]:G9}, expected {expected[i]:G9}");
        }
    }
}
