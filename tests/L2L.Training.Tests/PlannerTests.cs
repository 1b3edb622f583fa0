// The planner's prediction equals the run's measurement: device peak (and per category), host bytes and bus bytes by kind.
using L2L.Backends;
using L2L.Model;
using L2L.Training.Optim;
using L2L.Training.Planning;
using L2L.Training.Stash;
using L2L.TestSupport;
using Xunit;

namespace L2L.Training.Tests;

public sealed class PlannerTests(BackendFixture fixture)
{
    /// <summary>One configuration: a model, executor, stash placement and codec, batch split, optimizer and update placement.</summary>
    public sealed record Case(string Model, ExecutorKind Executor, StashPlacement Stash, StashCodec Codec, int Batch, int MicroBatches, int Seq,
        OptimizerKind Optimizer = OptimizerKind.AdamW, Update.UpdateLocation? EmbeddingUpdate = null, Update.UpdateMode? Mode = null, int Group = 256,
        Precision Precision = Precision.Fp32)
    {
        public override string ToString() =>
            $"{Model} {Executor} {Stash} {Codec}/{Group} B{Batch} U{MicroBatches} T{Seq} {Optimizer} emb:{EmbeddingUpdate?.ToString() ?? "auto"} {Mode?.ToString() ?? ""} {Precision}";
    }

    private static IModelConfig ModelOf(string name) => name switch
    {
        "tiny1" => TrainingHarness.Tiny(1),
        "tiny2" => TrainingHarness.Tiny(2),
        "tiny3" => TrainingHarness.Tiny(3),
        "gpt2-L1" => ModelConfigs.Preset("gpt2").WithLayers(1),
        "bert-base-L1" => ModelConfigs.Preset("bert-base").WithLayers(1),
        _ => ModelConfigs.Preset(name),
    };

    private static readonly ExecutorKind R = ExecutorKind.Relay, C = ExecutorKind.Conventional;
    private static readonly StashPlacement D = StashPlacement.Device, H = StashPlacement.Host;

    public static TheoryData<Case> Cases => new(
        new Case("tiny2", R, D, StashCodec.None, 4, 2, 8),
        new Case("tiny2", R, H, StashCodec.None, 4, 2, 8),
        new Case("tiny2", R, D, StashCodec.Int8, 4, 2, 8),
        new Case("tiny2", R, H, StashCodec.Int8, 4, 2, 8),
        new Case("tiny2", R, H, StashCodec.Int4, 4, 4, 8),
        new Case("tiny2", R, D, StashCodec.Int2, 2, 1, 8),
        new Case("tiny2", C, D, StashCodec.None, 2, 1, 8),
        new Case("tiny2", C, D, StashCodec.None, 4, 2, 8, OptimizerKind.Sgd),
        new Case("tiny2", R, D, StashCodec.None, 2, 1, 8, OptimizerKind.Sgd),
        new Case("tiny2", R, H, StashCodec.None, 4, 2, 8, OptimizerKind.Lamb),
        new Case("tiny2", R, D, StashCodec.None, 4, 2, 8, EmbeddingUpdate: Update.UpdateLocation.Host),
        new Case("tiny2", R, H, StashCodec.None, 4, 2, 8, Mode: Update.UpdateMode.Deferred),
        new Case("tiny2", R, D, StashCodec.Int8, 4, 2, 8, Mode: Update.UpdateMode.Deferred, EmbeddingUpdate: Update.UpdateLocation.Host),
        new Case("tiny1", R, D, StashCodec.None, 3, 3, 8),
        new Case("tiny1", R, H, StashCodec.None, 1, 1, 8),
        new Case("tiny1", C, D, StashCodec.None, 3, 3, 8),
        new Case("tiny3", R, H, StashCodec.Int8, 4, 2, 8, Group: 32),
        new Case("tiny3", R, D, StashCodec.Int4, 6, 3, 8),
        new Case("tiny3", R, D, StashCodec.Adaptive, 4, 2, 8),
        new Case("tiny3", R, H, StashCodec.Adaptive, 4, 2, 8),
        new Case("tiny2", R, H, StashCodec.Adaptive, 4, 4, 8, Group: 32),
        new Case("tiny3", R, H, StashCodec.None, 6, 3, 5),
        new Case("tiny3", C, D, StashCodec.None, 3, 3, 8),
        new Case("gpt2-tiny", R, D, StashCodec.None, 4, 2, 16),
        new Case("gpt2-tiny", R, H, StashCodec.None, 4, 2, 16),
        new Case("gpt2-tiny", R, H, StashCodec.Int2, 2, 2, 16),
        new Case("gpt2-tiny", C, D, StashCodec.None, 2, 1, 16),
        new Case("bert-tiny", R, D, StashCodec.None, 4, 2, 16),
        new Case("bert-tiny", R, H, StashCodec.None, 4, 2, 16),
        new Case("bert-tiny", R, H, StashCodec.Int8, 4, 2, 16),
        new Case("bert-tiny", R, D, StashCodec.Int4, 2, 1, 16),
        new Case("bert-tiny", C, D, StashCodec.None, 4, 2, 16),
        new Case("bert-tiny", C, D, StashCodec.None, 2, 1, 16, OptimizerKind.Sgd),
        new Case("bert-tiny", R, H, StashCodec.None, 2, 2, 16, OptimizerKind.Lamb),
        new Case("gpt2-L1", R, D, StashCodec.None, 1, 1, 8),
        new Case("gpt2-L1", R, H, StashCodec.Int8, 2, 2, 8),
        new Case("gpt2-L1", C, D, StashCodec.None, 1, 1, 8, OptimizerKind.Sgd),
        new Case("bert-base-L1", R, H, StashCodec.None, 1, 1, 8),
        // 16 bits: 2-byte weights, activations, stash and boundary gradients, FP32 gradients (plus the relay's narrowed staging) and masters.
        new Case("tiny2", R, D, StashCodec.None, 4, 2, 8, Precision: Precision.Bf16),
        new Case("tiny2", R, H, StashCodec.None, 4, 2, 8, Precision: Precision.Fp16),
        new Case("tiny2", R, H, StashCodec.None, 4, 2, 8, EmbeddingUpdate: Update.UpdateLocation.Host, Precision: Precision.Bf16),
        new Case("tiny2", R, D, StashCodec.Int8, 4, 2, 8, Precision: Precision.Bf16),
        new Case("tiny3", R, H, StashCodec.Adaptive, 4, 2, 8, Precision: Precision.Fp16),
        new Case("tiny2", R, H, StashCodec.None, 4, 2, 8, OptimizerKind.Lamb, Precision: Precision.Bf16),
        new Case("tiny2", R, D, StashCodec.None, 4, 2, 8, Mode: Update.UpdateMode.Deferred, Precision: Precision.Bf16),
        new Case("tiny2", C, D, StashCodec.None, 4, 2, 8, Precision: Precision.Bf16),
        new Case("tiny2", C, D, StashCodec.None, 2, 1, 8, OptimizerKind.Sgd, Precision: Precision.Fp16),
        new Case("bert-tiny", R, H, StashCodec.None, 4, 2, 16, Precision: Precision.Bf16),
        new Case("bert-tiny", C, D, StashCodec.None, 4, 2, 16, Precision: Precision.Fp16),
        new Case("gpt2-tiny", R, D, StashCodec.None, 4, 2, 16, Precision: Precision.Fp16));

    private static TrainOptions OptionsOf(Case c) => new()
    {
        Config = ModelOf(c.Model),
        Steps = 1,
        Batch = c.Batch,
        MicroBatches = c.MicroBatches,
        SeqLen = c.Seq,
        Optimizer = new OptimizerSettings(c.Optimizer, c.Optimizer == OptimizerKind.Sgd ? 0.1f : 1e-3f),
        Executor = c.Executor,
        Stash = c.Stash,
        StashCodec = c.Codec,
        StashGroup = c.Group,
        EmbeddingUpdate = c.EmbeddingUpdate,
        UpdateMode = c.Mode,
        Seed = 3,
        OptimizerThreads = 2,
        Precision = c.Precision,
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void PredictionEqualsMeasurement(Case c)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = OptionsOf(c);
        var plan = Planner.Plan(PlanSettings.From(options, DeviceShape.Of(backend.Accelerator)));
        Assert.Equal(0, backend.Memory.CurrentBytes);
        Assert.Equal(0, backend.Memory.PinnedHostBytes);
        var metrics = TrainingHarness.Run(backend, options).Metrics;
        var m = metrics[^1];
        Assert.Equal(plan.DevicePeakBytes, m.DevicePeakBytes);
        Assert.Equal(plan.DevicePeakBytesByCategory, m.DevicePeakBytesByCategory);
        Assert.Equal(plan.HostBytes, m.HostBytes);
        Assert.Equal(plan.Bus, m.BusBytesByKind);
        Assert.Equal(plan.Bus.Total, m.BusBytes);
        Assert.True(plan.DevicePeakBytes > 0 && plan.HostBytes > 0 && plan.Bus.Io > 0);
    }

    [Fact]
    public void DeviceShapeFromTheDeviceEqualsTheAcceleratorsSoPlansNeedNoAccelerator()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var context = DeviceCatalog.CreateContext();
        var (device, _) = DeviceCatalog.Select(context, new DeviceSpec(DeviceKind.Cpu));
        Assert.Equal(DeviceShape.Of(backend.Accelerator), DeviceShape.Of(device));
    }

    [Fact]
    public void BusKindsSumToTheTotalInEveryMetricsLine()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var options = OptionsOf(new Case("tiny2", R, H, StashCodec.None, 4, 2, 8)) with { Steps = 2 };
        var metrics = TrainingHarness.Run(backend, options).Metrics;
        foreach (var m in metrics)
        {
            Assert.Equal(m.BusBytes, m.BusBytesByKind.Total);
            using var json = System.Text.Json.JsonDocument.Parse(Trainer.ToJson(m));
            var kinds = json.RootElement.GetProperty("bus_bytes_by_kind");
            Assert.Equal(m.BusBytes, kinds.EnumerateObject().Sum(p => p.Value.GetInt64()));
            Assert.Equal(["boundary_grads", "grads", "io", "stash", "weights"], kinds.EnumerateObject().Select(p => p.Name).ToArray());
        }
        Assert.Equal(metrics[0].BusBytesByKind, metrics[1].BusBytesByKind); // every step moves the same bytes
    }
}
