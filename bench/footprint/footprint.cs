// Device peak bytes of the executors for a model and micro-batch, measured by building them (every device buffer is allocated at construction) without running a step.
// Run: dotnet run bench/footprint/footprint.cs -- [preset] [layers,...] [microbatch] [seq] [relay|conventional|both]
#:project ../../src/L2L.Training/L2L.Training.csproj
#:property PublishAot=false
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;
using L2L.Training;
using L2L.Training.Optim;

var preset = args.Length > 0 ? args[0] : "bert-large";
var depths = args.Length > 1 ? args[1].Split(',').Select(int.Parse).ToArray() : [1, 2, 3];
var microBatch = args.Length > 2 ? int.Parse(args[2]) : 8;
var seq = args.Length > 3 ? int.Parse(args[3]) : 512;
var which = args.Length > 4 ? args[4] : "both";
using var backend = Backend.Create(DeviceSpec.Resolve("cpu"));
var optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-4f);
var schedule = new LearningRateSchedule(ScheduleKind.Constant, 1e-4f);
foreach (var depth in depths)
{
    var config = ModelConfigs.Preset(preset).WithLayers(depth);
    var layout = new ModelLayout(config);
    var mb = new MicroBatch(config, microBatch, seq);
    // The executors only copy the weights, so zeros measure the same allocations as trained weights.
    var weights = layout.Layers.Select(l => new float[l.Length]).ToArray();
    void Report(string name) => Console.WriteLine($"{preset} L={depth} {microBatch}x{seq} {name}: peak {backend.Memory.PeakBytes} bytes ({MemoryTracker.Format(backend.Memory.PeakBytes)}); " +
        string.Join(", ", backend.Memory.PeakByCategory().Where(p => p.Value > 0).Select(p => $"{p.Key} {p.Value}")));
    if (which is "both" or "relay")
    {
        backend.Memory.ResetPeak();
        using (var eps = new EagerParamServer(backend, layout, weights, optimizer, schedule, threads: 1))
        using (new RelayExecutor(backend, eps, mb, 1, StashPlacement.Host))
            Report("relay, host stash, --embedding-update host");
        // The default: the embedding and head stay on the device with their AdamW moments.
        backend.Memory.ResetPeak();
        using (var eps = new EagerParamServer(backend, layout, weights, optimizer, schedule, threads: 1, deviceUpdated: [layout.Embedding.Index, layout.Head.Index]))
        using (new RelayExecutor(backend, eps, mb, 1, StashPlacement.Host))
            Report("relay, host stash (default: embedding and head updated on the device)");
    }
    if (which is "both" or "conventional")
    {
        backend.Memory.ResetPeak();
        using (new ConventionalExecutor(backend, layout, weights, optimizer, schedule, mb, 1))
            Report("conventional (AdamW)");
    }
}
