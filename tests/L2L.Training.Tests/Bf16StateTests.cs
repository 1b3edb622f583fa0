// AdamW moments in BF16 with stochastic rounding: unbiased rounding, half the state bytes, close to FP32 state, exact resume.
using L2L.Backends;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class Bf16StateTests(BackendFixture fixture) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "l2l-bf16-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static TrainOptions Options(StatePrecision precision, StashPlacement stash = StashPlacement.Device, long steps = 4) =>
        TrainingHarness.Options(TrainingHarness.Tiny(), ExecutorKind.Relay, stash, OptimizerKind.AdamW, steps: steps) with { OptimizerState = precision };

    [Fact]
    public void StochasticRoundingIsUnbiasedAndPicksANeighbour()
    {
        foreach (var x in new[] { 1f + 1f / 1024, -3.3e-5f, 7.77e-12f, 123456.7f })
        {
            var down = Bf16State.Widen((ushort)(BitConverter.SingleToInt32Bits(x) >>> 16));
            var up = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(down) + 0x10000);
            double sum = 0;
            const int n = 200_000;
            for (var i = 0; i < n; i++)
            {
                var r = Bf16State.Widen(Bf16State.RoundStochastic(x, 42, i));
                Assert.True(r == down || r == up, $"{x} rounded to {r}, not {down} or {up}");
                sum += r;
            }
            // The mean of n Bernoulli-weighted neighbours: standard error below (up - down) / (2 sqrt n).
            var gap = Math.Abs((double)up - down);
            Assert.InRange(sum / n, x - 5 * gap / (2 * Math.Sqrt(n)), x + 5 * gap / (2 * Math.Sqrt(n)));
        }
        // Values that are BF16 already come back unchanged either way; infinities stay.
        Assert.Equal(1.5f, Bf16State.Widen(Bf16State.RoundStochastic(1.5f, 1, 3)));
        Assert.Equal(1.5f, Bf16State.Widen(Bf16State.RoundNearest(1.5f)));
        Assert.Equal(float.PositiveInfinity, Bf16State.Widen(Bf16State.RoundStochastic(float.PositiveInfinity, 1, 3)));
        Assert.True(float.IsFinite(Bf16State.Widen(Bf16State.RoundStochastic(float.MaxValue, 1, 3))));
    }

    [Fact]
    public void HalvesTheStateBytesAndTrainsCloseToFp32()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var fp32 = Options(StatePrecision.Fp32);
        var layout = new ModelLayout(fp32.Config);
        double f32Bytes, bf16Bytes;
        using (var t = new Trainer(backend, fp32, TrainingHarness.Corpus())) f32Bytes = t.HostBytesPerParameter!.Value;
        using (var t = new Trainer(backend, Options(StatePrecision.Bf16), TrainingHarness.Corpus())) bf16Bytes = t.HostBytesPerParameter!.Value;
        // The blocks' state is on the host (the embedding and head are updated on the device, in FP32 there).
        long blocks = layout.Blocks.Sum(b => (long)b.Length);
        Assert.Equal(4.0 * blocks / layout.TotalLength, f32Bytes - bf16Bytes, 9);

        var exact = TrainingHarness.Run(backend, fp32);
        var bf16 = TrainingHarness.Run(backend, Options(StatePrecision.Bf16));
        var again = TrainingHarness.Run(backend, Options(StatePrecision.Bf16));
        // Not exact: m and v carry 8 significant bits, so each AdamW step (lr 3e-3) moves a weight by up to about 1% of
        // a step differently, i.e. a few 1e-5 over these steps.
        TensorAssert.Close(exact.Losses, bf16.Losses, 1e-4, 1e-3, "losses");
        TensorAssert.Close(TestData.ToDouble(TrainingHarness.Flatten(exact.Weights)), TrainingHarness.Flatten(bf16.Weights), 3e-4, 0, "weights");
        Assert.NotEqual(TrainingHarness.Flatten(exact.Weights), TrainingHarness.Flatten(bf16.Weights));
        // The rounding noise is a hash of (layer, step, element): runs repeat exactly.
        TensorAssert.Equal(TrainingHarness.Flatten(bf16.Weights), TrainingHarness.Flatten(again.Weights), "repeat");
    }

    [Fact]
    public void ResumeIsExact()
    {
        // Checkpoints store the BF16 values widened to FP32, which narrow back exactly.
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = Options(StatePrecision.Bf16, StashPlacement.Host);
        var straight = TrainingHarness.Run(backend, options);
        using (var first = new Trainer(backend, options, TrainingHarness.Corpus()))
        {
            first.Step();
            first.Step();
            first.Save(_dir);
        }
        var (_, weights) = Checkpoint.Load(_dir);
        var resumed = TrainingHarness.Run(backend, options, weights, Checkpoint.LoadTrainingState(_dir, new ModelLayout(options.Config)));
        Assert.Equal(straight.Losses[2..], resumed.Losses);
        TensorAssert.Equal(TrainingHarness.Flatten(straight.Weights), TrainingHarness.Flatten(resumed.Weights), "weights after 4 steps");
    }

    [Fact]
    public void NeedsAdamWOnTheRelay()
    {
        Assert.Contains("--optimizer-state", Assert.Throws<ArgumentException>((Options(StatePrecision.Bf16) with
        {
            Optimizer = new OptimizerSettings(OptimizerKind.Sgd, 0.1f),
        }).Validate).Message);
        Assert.Throws<ArgumentException>((Options(StatePrecision.Bf16) with { Executor = ExecutorKind.Conventional }).Validate);
    }
}
