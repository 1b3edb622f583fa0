// The in-process ordered sum: same bits as a serial rank-order loop, for any thread count and odd sizes.
using L2L.Training.Distributed;
using Xunit;

namespace L2L.Distributed.Tests;

public sealed class OrderedSumTests
{
    public static TheoryData<int, int> Shapes()
    {
        var data = new TheoryData<int, int>();
        foreach (int sources in new[] { 1, 2, 3, 5 })
            foreach (int count in new[] { 0, 1, 3, 7, 22, 127, 2 * OrderedSum.ChunkElements + 5, 1_000_003 })
                data.Add(sources, count);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Sum_MatchesSerialLoopForAnyThreadCount(int sources, int count)
    {
        float[][] inputs = Enumerable.Range(0, sources).Select(d => Driver.ScenarioData.Values(d, count, 9)).ToArray();
        float[] expected = Serial(inputs, count, start: null);
        foreach (int threads in new[] { 1, 2, 3, 7, 0 })
        {
            float[] actual = new float[count];
            Array.Fill(actual, float.NaN); // must be overwritten, not added to
            OrderedSum.Sum(actual, inputs, accumulate: false, maxThreads: threads);
            AssertSameBits(expected, actual, threads);
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Accumulate_AddsSourcesAfterTheDestinationsOwnValue(int sources, int count)
    {
        float[][] inputs = Enumerable.Range(0, sources).Select(d => Driver.ScenarioData.Values(d, count, 10)).ToArray();
        float[] start = Driver.ScenarioData.Values(99, count, 10);
        float[] expected = Serial(inputs, count, start);
        foreach (int threads in new[] { 1, 3 })
        {
            float[] actual = (float[])start.Clone();
            OrderedSum.Sum(actual, inputs, accumulate: true, maxThreads: threads);
            AssertSameBits(expected, actual, threads);
        }
    }

    [Fact]
    public void Order_ChangesTheBits_SoTheTestsAboveAreMeaningful()
    {
        const int count = 100_003;
        float[][] inputs = Enumerable.Range(0, 3).Select(d => Driver.ScenarioData.Values(d, count, 9)).ToArray();
        float[] forward = new float[count];
        float[] backward = new float[count];
        OrderedSum.Sum(forward, inputs);
        OrderedSum.Sum(backward, inputs.Reverse().ToArray());
        int differs = 0;
        for (int i = 0; i < count; i++) if (BitConverter.SingleToInt32Bits(forward[i]) != BitConverter.SingleToInt32Bits(backward[i])) differs++;
        Assert.True(differs > 100, $"only {differs} elements depend on the order");
    }

    [Fact]
    public void MismatchedLengths_AreRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => OrderedSum.Sum(new float[4], [new float[4], new float[3]]));
        Assert.Contains("Source 1 holds 3 floats; the destination holds 4.", e.Message);
    }

    private static float[] Serial(float[][] inputs, int count, float[]? start)
    {
        var sum = new float[count];
        for (int i = 0; i < count; i++)
        {
            float acc = start is null ? inputs[0][i] : start[i];
            for (int d = start is null ? 1 : 0; d < inputs.Length; d++) acc += inputs[d][i];
            sum[i] = acc;
        }
        return sum;
    }

    private static void AssertSameBits(float[] expected, float[] actual, int threads)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"element {i} with {threads} threads: expected {expected[i]:R}, got {actual[i]:R}");
    }
}
