// A static loss scale: the factors that unscale on the host, per-layer overflow detection, the per-layer update counts
// of overflowed layers, checkpoint metadata, and the host flow of an overflowed layer with a 16-bit param server.
using L2L.Backends;
using L2L.Kernels;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Update;
using Xunit;

namespace L2L.Training.Tests;

public sealed class StaticLossScaleTests(BackendFixture fixture)
{
    private const int Layers = 4;

    private static GradientControl Control(float scale, float? clip = null, ClipMode mode = ClipMode.Layer, TrainingState? resume = null) =>
        new(clip, mode, LossScaleMode.None, Layers, resume, staticLossScale: scale);

    private static TrainingState Resume(IReadOnlyDictionary<string, string> metadata, long step) =>
        new(step, "adamw", 2, new float[Layers][], metadata);

    [Theory]
    [InlineData(1024f)]
    [InlineData(3f)]
    public void EveryLayerFactorDividesByTheScale(float scale)
    {
        var control = Control(scale);
        Assert.Equal(scale, control.LossScale);
        Assert.Equal(scale, control.StaticLossScale);
        Assert.False(control.NeedsGlobalNorm); // eager updates suffice
        Assert.Equal(1f / scale, control.LayerFactor(123f));
        var sums = new[] { 4f, 9f, 0f, 12f };
        var decision = control.Decide(sums);
        Assert.False(decision.Skip);
        Assert.Equal(1f / scale, decision.Factor);
        Assert.Equal(5.0 / scale, decision.GradNorm, 12);
        // Without a scale the eager factor is exactly 1, as before.
        Assert.Equal(1f, new GradientControl(null, ClipMode.Layer, LossScaleMode.None, Layers).LayerFactor(123f));
    }

    [Fact]
    public void PerLayerClippingUsesTheUnscaledNorm()
    {
        const float scale = 256f, max = 0.5f;
        var control = Control(scale, clip: max);
        // Scaled gradients of norm 256 * 2: unscaled norm 2, clipped to 0.5.
        var sumOfSquares = (2f * scale) * (2f * scale);
        var factor = control.LayerFactor(sumOfSquares);
        Assert.Equal(1f / scale * GradientControl.ClipCoefficient(max, 2f), factor);
        Assert.Equal(max / 2f / scale, factor, 1e-6f);
        // Below the max norm only the unscaling remains.
        Assert.Equal(1f / scale, control.LayerFactor(0.25f * 0.25f * scale * scale));
    }

    [Theory]
    [InlineData(float.PositiveInfinity, true)]
    [InlineData(float.NaN, true)]
    [InlineData(float.NegativeInfinity, true)]
    [InlineData(float.MaxValue, false)]
    [InlineData(0f, false)]
    [InlineData(1e-30f, false)]
    public void ALayerOverflowedWhenItsSumOfSquaresIsNotFinite(float sumOfSquares, bool overflowed)
    {
        Assert.Equal(overflowed, Control(1024f).LayerOverflowed(sumOfSquares));
    }

    [Fact]
    public void AnOverflowedLayersUpdateCountDoesNotAdvance()
    {
        var control = Control(1024f);
        for (var i = 0; i < Layers; i++) Assert.Equal(1, control.NextOptimizerStep(i));
        // Step 2: layers 2 and 0 overflow (reported in that order, 2 twice), the others are updated.
        control.ReportOverflow(2);
        control.ReportOverflow(0);
        control.ReportOverflow(2);
        Assert.Throws<InvalidOperationException>(() => control.NextOptimizerStep(2));
        Assert.Equal(2, control.NextOptimizerStep(1));
        Assert.Equal(2, control.NextOptimizerStep(3));
        Assert.Equal(new[] { 2, 0 }, control.TakeOverflowedLayers());
        Assert.Empty(control.TakeOverflowedLayers());
        Assert.Equal(2, control.OverflowedLayerUpdates);
        // Step 3: every layer is updated; the overflowed ones count one update fewer.
        Assert.Equal(new[] { 2L, 3L, 2L, 3L }, Enumerable.Range(0, Layers).Select(control.NextOptimizerStep).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => control.ReportOverflow(Layers));

        // The counts, the dropped updates and the scale survive a checkpoint.
        var metadata = new Dictionary<string, string>();
        control.Save(metadata);
        Assert.Equal("1024", metadata[GradientControl.LossScaleKey]);
        Assert.Equal("2", metadata[GradientControl.OverflowedLayerUpdatesKey]);
        var resumed = Control(1024f, resume: Resume(metadata, 3));
        Assert.Equal(2, resumed.OverflowedLayerUpdates);
        Assert.Equal(new[] { 2L, 3L, 2L, 3L }, Enumerable.Range(0, Layers).Select(resumed.UpdatesOf).ToArray());
    }

    [Fact]
    public void AnOverflowSkipsTheStepOnlyUnderGlobalClipping()
    {
        float[] sums = [1f, float.PositiveInfinity, 4f, 1f];
        // Eager semantics: the step goes on; the executor drops the overflowed layer alone.
        var perLayer = Control(64f).Decide(sums);
        Assert.False(perLayer.Skip);
        Assert.Equal(1f / 64f, perLayer.Factor);
        // Global clipping has no meaningful norm: the whole step is skipped and the static scale stays.
        var global = Control(64f, clip: 1f, mode: ClipMode.Global);
        var decision = global.Decide(sums);
        Assert.True(decision.Skip);
        Assert.Equal(1, global.SkippedSteps);
        Assert.Equal(64f, global.LossScale);
    }

    [Fact]
    public void BadScalesAndMismatchedResumesAreRefused()
    {
        foreach (var bad in new[] { 0f, -2f, float.NaN, float.PositiveInfinity })
            Assert.Contains("positive", Assert.Throws<ArgumentException>(() => Control(bad)).Message);
        Assert.Throws<ArgumentException>(() => new GradientControl(null, ClipMode.Global, LossScaleMode.Dynamic, Layers, staticLossScale: 8f));
        var other = Assert.Throws<InvalidDataException>(() => Control(512f, resume: Resume(new Dictionary<string, string> { ["loss_scale"] = "1024" }, 1)));
        Assert.Contains("--loss-scale 1024", other.Message);
        var dynamic = new Dictionary<string, string>();
        var scaler = new LossScaler();
        scaler.Save(dynamic);
        Assert.Contains("dynamic", Assert.Throws<InvalidDataException>(() => Control(512f, resume: Resume(dynamic, 1))).Message);
        // A checkpoint without a scale resumes with one.
        Assert.Equal(512f, Control(512f, resume: Resume(new Dictionary<string, string>(), 1)).LossScale);

        var options = new TrainOptions { Config = TrainingHarness.Tiny(), SeqLen = 8 };
        Assert.Contains("positive", Assert.Throws<ArgumentException>(() => (options with { StaticLossScale = -1f }).Validate()).Message);
        Assert.Throws<ArgumentException>(() => (options with { StaticLossScale = 8f, LossScale = LossScaleMode.Dynamic }).Validate());
        Assert.Contains("data parallel", Assert.Throws<ArgumentException>(() => (options with { StaticLossScale = 8f, Devices = 2, MicroBatches = 2, Batch = 2 }).Validate()).Message);
        (options with { StaticLossScale = 8f }).Validate();
        Assert.Equal(8f, GradientControl.From(options with { StaticLossScale = 8f }, null).LossScale);
    }

    [Fact]
    public void AnOverflowedLayerIsDroppedAndTheOthersAreUnscaledOnTheHost()
    {
        // The host side of one eager FP16 step under --loss-scale 1024: gradients of the scaled loss, in FP16; block 1
        // overflowed. The others are updated with the factor 1/1024 applied after widening, exactly as an FP32 server
        // given the widened, unscaled-by-the-same-factor gradients; block 1 keeps its weights, state and count.
        const float scale = 1024f;
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(TrainingHarness.Tiny(2));
        EagerParamServer Server(Precision p) => new(backend, layout, Models.LayerInitializer(layout, 4), new OptimizerSettings(OptimizerKind.AdamW, 1e-2f),
            new LearningRateSchedule(ScheduleKind.Constant, 1e-2f), threads: 1, precision: p);
        using var eps16 = Server(Precision.Fp16);
        using var eps32 = Server(Precision.Fp32);
        var control = new GradientControl(null, ClipMode.Layer, LossScaleMode.None, layout.Layers.Count, staticLossScale: scale);
        var reference = new GradientControl(null, ClipMode.Layer, LossScaleMode.None, layout.Layers.Count, staticLossScale: scale);
        var before = eps16.SnapshotWeights();
        var overflowed = layout.Blocks[1].Index;
        foreach (var layer in layout.Layers.Reverse())
        {
            // Small gradients that the scale lifts into FP16's normal range; the overflowed layer has an infinity.
            var g = TestData.Normal(layer.Index, (int)layer.Length, scale: 1e-5 * scale);
            if (layer.Index == overflowed) g[3] = float.PositiveInfinity;
            var bits = g.Select(x => BitConverter.HalfToUInt16Bits((Half)x)).ToArray();
            var sumOfSquares = (float)bits.Sum(b => (double)(float)BitConverter.UInt16BitsToHalf(b) * (float)BitConverter.UInt16BitsToHalf(b));
            using var d16 = backend.Upload(bits, "test.grads16");
            using var d32 = backend.Upload(bits.Select(b => (float)BitConverter.UInt16BitsToHalf(b)).ToArray(), "test.grads32");
            eps16.EnqueueGradients(layer.Index, backend.CopyStream, d16.View.Cast<ILGPU.Half>());
            eps32.EnqueueGradients(layer.Index, backend.CopyStream, d32.View);
            backend.CopyStream.Synchronize();
            if (control.LayerOverflowed(sumOfSquares))
            {
                eps16.DiscardGradients(layer.Index);
                control.ReportOverflow(layer.Index);
                eps32.DiscardGradients(layer.Index);
                continue;
            }
            eps16.BeginUpdate(layer.Index, 0, control.LayerFactor(sumOfSquares), control.NextOptimizerStep(layer.Index));
            eps32.BeginUpdate(layer.Index, 0, reference.LayerFactor(sumOfSquares), reference.NextOptimizerStep(layer.Index));
        }
        Assert.Equal(new[] { overflowed }, control.TakeOverflowedLayers());
        Assert.Equal(0, control.UpdatesOf(overflowed));
        var after = eps16.SnapshotWeights();
        var after32 = eps32.SnapshotWeights();
        TensorAssert.Equal(before[overflowed], after[overflowed], "the overflowed layer");
        Assert.All(after[overflowed], w => Assert.True(float.IsFinite(w)));
        foreach (var layer in layout.Layers.Where(l => l.Index != overflowed))
        {
            Assert.Equal(1, control.UpdatesOf(layer.Index));
            Assert.NotEqual(before[layer.Index], after[layer.Index]);
            TensorAssert.Equal(after32[layer.Index], after[layer.Index], $"{layer.Name} after the unscaled update");
        }
    }
}
