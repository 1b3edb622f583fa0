// The param server in 16-bit precision on the CPU accelerator: the fetched copy is the FP32 masters rounded to nearest
// even, an update from 16-bit gradients is the FP32 server's update on the widened gradients, the bus carries half.
using ILGPU;
using L2L.Backends;
using L2L.Kernels;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Optim;
using L2L.Training.Update;
using Xunit;
using Half = ILGPU.Half;

namespace L2L.Training.Tests;

public sealed class ParamServer16Tests(BackendFixture fixture)
{
    private static readonly GptConfig Config = TrainingHarness.Tiny(2);

    private static EagerParamServer Server(Backend backend, ModelLayout layout, Precision precision, OptimizerKind optimizer = OptimizerKind.AdamW,
        UpdateMode mode = UpdateMode.Eager, StatePrecision state = StatePrecision.Fp32, int[]? onDevice = null, int slots = EagerParamServer.DefaultGradientSlots) =>
        new(backend, layout, Models.LayerInitializer(layout, 5), new OptimizerSettings(optimizer, 1e-2f, WeightDecay: 0.1f),
            new LearningRateSchedule(ScheduleKind.Constant, 1e-2f), threads: 2, deviceUpdated: onDevice, gradientSlots: slots, mode: mode,
            statePrecision: state, precision: precision);

    /// <summary>The 16-bit bits of <paramref name="x"/> rounded to nearest even (BF16 as the device rounds, FP16 as .NET's cast).</summary>
    private static ushort Round(Precision precision, float x) =>
        precision == Precision.Bf16 ? Bf16.RoundBits(x) : BitConverter.HalfToUInt16Bits((System.Half)x);

    private static float Widen(Precision precision, ushort bits) =>
        precision == Precision.Bf16 ? BitConverter.UInt32BitsToSingle((uint)bits << 16) : (float)BitConverter.UInt16BitsToHalf(bits);

    private static void Fetch(EagerParamServer eps, int layer, Backend backend, DeviceBuffer<ushort> target)
    {
        if (eps.Precision == Precision.Bf16)
            eps.EnqueueFetch(layer, backend.CopyStream, target.View.Cast<Bf16>());
        else
            eps.EnqueueFetch(layer, backend.CopyStream, target.View.Cast<Half>());
        backend.CopyStream.Synchronize();
    }

    private static void SendGradients(EagerParamServer eps, int layer, Backend backend, DeviceBuffer<ushort> source)
    {
        if (eps.Precision == Precision.Bf16)
            eps.EnqueueGradients(layer, backend.CopyStream, source.View.Cast<Bf16>());
        else
            eps.EnqueueGradients(layer, backend.CopyStream, source.View.Cast<Half>());
        backend.CopyStream.Synchronize();
    }

    private static ushort[] Download(Backend backend, DeviceBuffer<ushort> buffer, long length) => backend.Download(buffer).AsSpan(0, (int)length).ToArray();

    private static void AssertCopyIsRoundedMaster(Precision precision, ReadOnlySpan<float> master, ReadOnlySpan<ushort> copy, string what)
    {
        for (var i = 0; i < master.Length; i++)
        {
            if (copy[i] != Round(precision, master[i]))
                Assert.Fail($"{what}: [{i}] = 0x{copy[i]:X4}, master {master[i]:G9} rounds to 0x{Round(precision, master[i]):X4}");
        }
    }

    public static TheoryData<Precision, OptimizerKind, UpdateMode, StatePrecision> RoundTripCases() => new()
    {
        { Precision.Bf16, OptimizerKind.AdamW, UpdateMode.Eager, StatePrecision.Fp32 },
        { Precision.Fp16, OptimizerKind.AdamW, UpdateMode.Eager, StatePrecision.Fp32 },
        { Precision.Bf16, OptimizerKind.Sgd, UpdateMode.Deferred, StatePrecision.Fp32 },
        { Precision.Fp16, OptimizerKind.Lamb, UpdateMode.Deferred, StatePrecision.Fp32 },
        { Precision.Bf16, OptimizerKind.AdamW, UpdateMode.Eager, StatePrecision.Bf16 },
    };

    [Theory]
    [MemberData(nameof(RoundTripCases))]
    public void UpdatesFrom16BitGradientsEqualTheFp32ServersOnTheWidenedGradients(Precision precision, OptimizerKind optimizer, UpdateMode mode, StatePrecision state)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        using var eps16 = Server(backend, layout, precision, optimizer, mode, state);
        using var eps32 = Server(backend, layout, Precision.Fp32, optimizer, mode, state);
        Assert.Equal(precision, eps16.Precision);
        Assert.Equal(Precision.Fp32, eps32.Precision);
        var longest = layout.Layers.Max(l => l.Length);
        using var copy = backend.Zeros<ushort>(longest, "test.copy");
        using var weights32 = backend.Zeros<float>(longest, "test.weights");
        var masters = eps32.SnapshotWeights();
        TensorAssert.Equal(TrainingHarness.Flatten(masters), TrainingHarness.Flatten(eps16.SnapshotWeights()), "initial masters");

        // Before any update: the copy is the initial masters rounded.
        foreach (var layer in layout.Layers)
        {
            Fetch(eps16, layer.Index, backend, copy);
            AssertCopyIsRoundedMaster(precision, masters[layer.Index], Download(backend, copy, layer.Length), $"initial copy of {layer.Name}");
            eps32.EnqueueFetch(layer.Index, backend.CopyStream, weights32.View);
            backend.CopyStream.Synchronize();
        }

        // One step from 16-bit gradients, and the FP32 server's from the same values widened; a factor that is not a power of two.
        const float factor = 0.37f;
        var grads16 = new Dictionary<int, DeviceBuffer<ushort>>();
        var grads32 = new Dictionary<int, DeviceBuffer<float>>();
        try
        {
            foreach (var layer in layout.Layers)
            {
                var g = TestData.Normal(10 + layer.Index, (int)layer.Length, scale: 0.05);
                var bits = g.Select(x => Round(precision, x)).ToArray();
                grads16[layer.Index] = backend.Upload(bits, "test.grads16");
                grads32[layer.Index] = backend.Upload(bits.Select(b => Widen(precision, b)).ToArray(), "test.grads32");
            }
            // Backward order, as the relay sends them (the head first).
            var order = layout.Layers.Select(l => l.Index).Reverse().ToArray();
            foreach (var i in order)
            {
                SendGradients(eps16, i, backend, grads16[i]);
                eps32.EnqueueGradients(i, backend.CopyStream, grads32[i].View);
                backend.CopyStream.Synchronize();
                if (mode == UpdateMode.Eager)
                {
                    eps16.BeginUpdate(i, 0, factor);
                    eps32.BeginUpdate(i, 0, factor);
                }
            }
            if (mode == UpdateMode.Deferred)
            {
                var forward = order.Reverse().ToArray();
                eps16.BeginUpdatesInOrder(forward, 0, _ => 1, _ => factor);
                eps32.BeginUpdatesInOrder(forward, 0, _ => 1, _ => factor);
            }
        }
        finally
        {
            foreach (var b in grads16.Values) b.Dispose();
            foreach (var b in grads32.Values) b.Dispose();
        }
        var after = eps32.SnapshotWeights();
        var after16 = eps16.SnapshotWeights();
        for (var i = 0; i < after.Length; i++)
        {
            Assert.NotEqual(masters[i], after[i]);
            TensorAssert.Equal(after[i], after16[i], $"{layout.Layers[i].Name} master after the update");
        }
        var s16 = eps16.SnapshotState();
        var s32 = eps32.SnapshotState();
        for (var i = 0; i < after.Length; i++)
            TensorAssert.Equal(s32.LayerStates[i], s16.LayerStates[i], $"{layout.Layers[i].Name} optimizer state");

        // The copy the optimizer wrote in its pass is the new masters rounded to nearest even.
        foreach (var layer in layout.Layers)
        {
            Fetch(eps16, layer.Index, backend, copy);
            AssertCopyIsRoundedMaster(precision, after[layer.Index], Download(backend, copy, layer.Length), $"copy of {layer.Name} after the update");
            eps32.EnqueueFetch(layer.Index, backend.CopyStream, weights32.View);
            backend.CopyStream.Synchronize();
        }

        // Every weight and gradient element crossed the bus in 2 bytes instead of 4.
        Assert.True(eps16.WeightBusBytes > 0 && eps16.GradientBusBytes > 0);
        Assert.Equal(eps32.WeightBusBytes, 2 * eps16.WeightBusBytes);
        Assert.Equal(eps32.GradientBusBytes, 2 * eps16.GradientBusBytes);
        Assert.Equal(2L * 2 * layout.TotalLength, eps16.WeightBusBytes);
    }

    [Theory]
    [InlineData(Precision.Bf16)]
    [InlineData(Precision.Fp16)]
    public void DiscardingALayersGradientsLeavesItUntouchedAndFreesItsSlot(Precision precision)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        using var eps = Server(backend, layout, precision, slots: 2);
        var block = layout.Blocks[0];
        using var grads = backend.Upload(Enumerable.Repeat(Round(precision, 0.5f), (int)block.Length).ToArray(), "test.grads16");
        using var copy = backend.Zeros<ushort>(block.Length, "test.copy");
        var before = eps.SnapshotWeights();
        var stateBefore = eps.SnapshotState();
        Fetch(eps, block.Index, backend, copy);
        var copyBefore = Download(backend, copy, block.Length);

        SendGradients(eps, block.Index, backend, grads);
        eps.DiscardGradients(block.Index);
        Assert.Throws<InvalidOperationException>(() => eps.DiscardGradients(block.Index)); // nothing left to drop
        Assert.Throws<InvalidOperationException>(() => eps.BeginUpdate(block.Index, 0));

        TensorAssert.Equal(TrainingHarness.Flatten(before), TrainingHarness.Flatten(eps.SnapshotWeights()), "weights after the discard");
        TensorAssert.Equal(TrainingHarness.Flatten(stateBefore.LayerStates), TrainingHarness.Flatten(eps.SnapshotState().LayerStates), "state after the discard");
        Fetch(eps, block.Index, backend, copy);
        Assert.Equal(copyBefore, Download(backend, copy, block.Length));

        // Its slot is free again: two slots take two more layers' gradients with no update begun (a third would not fit).
        SendGradients(eps, layout.Blocks[1].Index, backend, grads);
        SendGradients(eps, block.Index, backend, grads);
        Assert.Throws<InvalidOperationException>(() => SendGradients(eps, layout.Head.Index, backend, grads));
        eps.BeginUpdate(layout.Blocks[1].Index, 0);
        eps.BeginUpdate(block.Index, 0);
        eps.WaitAll();
        Assert.NotEqual(before[block.Index], eps.SnapshotWeights()[block.Index]);
    }

    [Fact]
    public void StoredWeightsOfADeviceUpdatedLayerReachItsCopyAtTheNextFetch()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        var embedding = layout.Embedding;
        using var eps = Server(backend, layout, Precision.Bf16, onDevice: [embedding.Index, layout.Head.Index]);
        var stored = TestData.Normal(77, (int)embedding.Length, scale: 0.3);
        using var source = backend.Upload(stored, "test.masters");
        using var copy = backend.Zeros<ushort>(embedding.Length, "test.copy");
        eps.EnqueueStoreWeights(embedding.Index, backend.CopyStream, source.View);
        Fetch(eps, embedding.Index, backend, copy);
        AssertCopyIsRoundedMaster(Precision.Bf16, stored, Download(backend, copy, embedding.Length), "copy after the store");
        TensorAssert.Equal(stored, eps.SnapshotWeights()[embedding.Index], "stored masters");
        // The FP32 overload still uploads the FP32 masters, at 4 bytes an element.
        using var masters = backend.Zeros<float>(embedding.Length, "test.weights");
        var bus = eps.WeightBusBytes;
        eps.EnqueueFetch(embedding.Index, backend.CopyStream, masters.View);
        backend.CopyStream.Synchronize();
        TensorAssert.Equal(stored, backend.Download(masters), "FP32 fetch");
        Assert.Equal(bus + 4 * embedding.Length, eps.WeightBusBytes);
    }

    [Fact]
    public void TheWrongElementTypeIsRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        using var eps16 = Server(backend, layout, Precision.Bf16);
        using var eps32 = Server(backend, layout, Precision.Fp32);
        using var buffer = backend.Zeros<float>(layout.Layers.Max(l => l.Length), "test.buffer");
        var c = backend.CopyStream;
        var block = layout.Blocks[0].Index;
        Assert.Contains("bf16", Assert.Throws<ArgumentException>(() => eps16.EnqueueFetch(block, c, buffer.View.Cast<Half>())).Message);
        Assert.Throws<ArgumentException>(() => eps16.EnqueueFetch<float>(block, c, buffer.View));
        Assert.Throws<ArgumentException>(() => eps16.EnqueueGradients(block, c, buffer.View));
        Assert.Throws<ArgumentException>(() => eps32.EnqueueFetch(block, c, buffer.View.Cast<Bf16>()));
        Assert.Throws<ArgumentException>(() => eps32.EnqueueGradients(block, c, buffer.View.Cast<Bf16>()));
        // float works on an FP32 server through either overload.
        eps32.EnqueueFetch<float>(block, c, buffer.View);
        c.Synchronize();
    }

    public static TheoryData<Precision, UpdateMode, bool> HostCases()
    {
        var data = new TheoryData<Precision, UpdateMode, bool>();
        foreach (var p in Enum.GetValues<Precision>())
            foreach (var mode in Enum.GetValues<UpdateMode>())
                foreach (var onDevice in new[] { false, true })
                    data.Add(p, mode, onDevice);
        return data;
    }

    [Theory]
    [MemberData(nameof(HostCases))]
    public void DescribeHostSumsToTheServersHostBytes(Precision precision, UpdateMode mode, bool embeddingOnDevice)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        // Wide enough that the embedding is longer than a block (its own gradient buffer when the host updates it).
        var layout = new ModelLayout(new GptConfig(VocabSize: 512, MaxPositions: 16, Channels: 16, Layers: 2, Heads: 2));
        int[] onDevice = embeddingOnDevice ? [layout.Embedding.Index, layout.Head.Index] : [];
        using var eps = Server(backend, layout, precision, mode: mode, onDevice: onDevice);
        var specs = EagerParamServer.DescribeHost(layout, 2, onDevice, EagerParamServer.DefaultGradientSlots, mode, StatePrecision.Fp32, precision);
        Assert.Equal(eps.HostBytes, specs.Sum(s => s.Bytes));
        var fp32 = EagerParamServer.DescribeHost(layout, 2, onDevice, EagerParamServer.DefaultGradientSlots, mode, StatePrecision.Fp32);
        long Grads(IEnumerable<BufferSpec> list) => list.Where(s => s.Category == MemoryCategory.Grads).Sum(s => s.Bytes);
        Assert.True(Grads(fp32) > 0);
        if (precision == Precision.Fp32)
        {
            Assert.Equal(fp32, specs);
            return;
        }
        // Gradient buffers are exactly half; each layer gains its 16-bit copy (2 bytes a parameter).
        Assert.Equal(Grads(fp32), 2 * Grads(specs));
        Assert.All(specs.Where(s => s.Category == MemoryCategory.Grads), s => Assert.Equal(2, s.ElementSize));
        var copies = specs.Where(s => s.Name.EndsWith(".weights16", StringComparison.Ordinal)).ToList();
        Assert.Equal(layout.Layers.Count, copies.Count);
        Assert.All(copies, s => Assert.Equal((MemoryCategory.Params, 2), (s.Category, s.ElementSize)));
        Assert.Equal(fp32.Sum(s => s.Bytes) - Grads(fp32) / 2 + 2 * layout.TotalLength, specs.Sum(s => s.Bytes));
    }

    [Theory]
    [InlineData(Precision.Bf16, UpdateLocation.Device, UpdateMode.Eager)]
    [InlineData(Precision.Fp16, UpdateLocation.Host, UpdateMode.Deferred)]
    [InlineData(Precision.Fp32, UpdateLocation.Host, UpdateMode.Eager)]
    public void ThePlansHostBytesAreThe16BitServersAndTheExecutors(Precision precision, UpdateLocation embeddingUpdate, UpdateMode mode)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = new GptConfig(VocabSize: 512, MaxPositions: 16, Channels: 16, Layers: 2, Heads: 2);
        var layout = new ModelLayout(config);
        var options = new TrainOptions { Config = config, Batch = 4, MicroBatches = 2, SeqLen = 8, EmbeddingUpdate = embeddingUpdate, UpdateMode = mode };
        var settings = Planning.PlanSettings.From(options, DeviceShape.Of(backend.Accelerator)) with { Precision = precision };
        var plan = Planning.Planner.Plan(settings);
        int[] onDevice = embeddingUpdate == UpdateLocation.Device ? [layout.Embedding.Index, layout.Head.Index] : [];
        using var eps = Server(backend, layout, precision, mode: mode, onDevice: onDevice);
        Assert.Equal(eps.HostBytes + Planning.Planner.RelayExecutorHost(settings, layout).Sum(s => s.Bytes), plan.HostBytes);
    }

    [Fact]
    public void AShardedOptimizerRefuses16BitPrecisionWithOneLine()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        var e = Assert.Throws<ArgumentException>(() => new EagerParamServer(backend, layout, Models.LayerInitializer(layout, 1),
            new OptimizerSettings(OptimizerKind.AdamW, 1e-3f), new LearningRateSchedule(ScheduleKind.Constant, 1e-3f),
            parallel: new Parallel.ParallelSetup([backend], new TwoRankStandIn(), ShardOptimizer: true), precision: Precision.Bf16));
        Assert.Contains("--shard-optimizer", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(0, backend.Memory.PinnedHostBytes); // refused before anything was allocated
    }
}
