// The training loop: data, executor, metrics and checkpoints for one run.
using System.Diagnostics;
using System.Text.Json;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Model.Device;

namespace L2L.Training;

/// <summary>What one finished step reports.</summary>
/// <param name="Step">Optimizer steps completed (1-based).</param>
/// <param name="Loss">Mean cross-entropy of the step's minibatch.</param>
/// <param name="LearningRate">The learning rate used.</param>
/// <param name="TokensPerSecond">Tokens processed per second in this step.</param>
/// <param name="StepSeconds">Wall time of the step.</param>
/// <param name="DevicePeakBytes">Peak tracked device bytes since the run started.</param>
/// <param name="DevicePeakBytesByCategory">The same per category.</param>
/// <param name="BusBytes">Bytes moved between host and device in this step.</param>
/// <param name="DeviceAllocations">Device allocations made so far (constant after the first step).</param>
/// <param name="CopyWaitSeconds">Time blocked waiting on host/device transfers in this step.</param>
public sealed record StepMetrics(long Step, double Loss, double LearningRate, double TokensPerSecond, double StepSeconds,
    long DevicePeakBytes, IReadOnlyDictionary<string, long> DevicePeakBytesByCategory, long BusBytes, long DeviceAllocations,
    double CopyWaitSeconds = 0)
{
    /// <summary>The fraction of the step spent waiting on transfers.</summary>
    public double CopyWaitFraction => StepSeconds > 0 ? CopyWaitSeconds / StepSeconds : 0;
}

/// <summary>Runs training: builds the executor, feeds it batches, logs metrics and saves checkpoints.</summary>
public sealed class Trainer : IDisposable
{
    private readonly Backend _backend;
    private readonly TrainOptions _options;
    private readonly ModelLayout _layout;
    private readonly BatchLoader _loader;
    private readonly EagerParamServer? _eps;
    private readonly IExecutor _executor;
    private readonly int[] _inputs, _targets;

    /// <summary>
    /// Prepares a run on <paramref name="backend"/>: initial weights come from <paramref name="resume"/>
    /// (weights and optimizer state), else <paramref name="init"/> (weights only), else GPT-2 initialisation.
    /// </summary>
    public Trainer(Backend backend, TrainOptions options, ITokenSource data, float[][]? init = null, TrainingState? resume = null)
    {
        options.Validate();
        if (data.VocabSize > options.Config.VocabSize)
            throw new ArgumentException($"The data ({data.Description}) uses a vocabulary of {data.VocabSize}, larger than the model's vocab_size {options.Config.VocabSize}.");
        _backend = backend;
        _options = options;
        _layout = new ModelLayout(options.Config);
        _loader = new BatchLoader(data, options.Batch, options.SeqLen, options.Shuffle, options.Seed);
        _inputs = new int[options.Batch * options.SeqLen];
        _targets = new int[options.Batch * options.SeqLen];
        if (options.DeviceBudgetBytes is { } budget)
            backend.Memory.BudgetBytes = budget;
        backend.Memory.ResetPeak(); // the run's peak includes the executor's own allocations
        var weights = init ?? GptInit.Create(_layout, options.Seed);
        var mb = new MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen);
        if (options.Executor == ExecutorKind.Relay)
        {
            _eps = new EagerParamServer(backend, _layout, weights, options.Optimizer, options.LearningRate, resume, options.OptimizerThreads);
            try
            {
                _executor = new RelayExecutor(backend, _eps, mb, options.MicroBatches, options.Stash);
            }
            catch
            {
                _eps.Dispose();
                throw;
            }
        }
        else
        {
            _executor = new ConventionalExecutor(backend, _layout, weights, options.Optimizer, options.LearningRate, mb, options.MicroBatches, resume);
        }
    }

    /// <summary>The parameter layout.</summary>
    public ModelLayout Layout => _layout;

    /// <summary>Optimizer steps completed.</summary>
    public long StepsDone => _executor.StepsDone;

    /// <summary>Runs one step on the next minibatch and returns its metrics.</summary>
    public StepMetrics Step()
    {
        var step = _executor.StepsDone;
        _loader.Fill(step, _inputs, _targets);
        var clock = Stopwatch.StartNew();
        var result = _executor.Step(step, _inputs, _targets);
        var seconds = clock.Elapsed.TotalSeconds;
        return new StepMetrics(step + 1, result.Loss, _options.LearningRate.At(step), _inputs.Length / seconds, seconds,
            _backend.Memory.PeakBytes, _backend.Memory.PeakByCategory(), result.BusBytes, _backend.Memory.AllocationCount, result.CopyWaitSeconds);
    }

    /// <summary>Runs until <see cref="TrainOptions.Steps"/> steps are done, calling <paramref name="onStep"/> after each.</summary>
    public IReadOnlyList<StepMetrics> Run(Action<StepMetrics>? onStep = null, string? metricsPath = null, CancellationToken cancel = default)
    {
        var all = new List<StepMetrics>();
        using var log = metricsPath is null ? null : OpenLog(metricsPath);
        while (_executor.StepsDone < _options.Steps)
        {
            cancel.ThrowIfCancellationRequested();
            var metrics = Step();
            all.Add(metrics);
            if (log is not null)
            {
                log.WriteLine(ToJson(metrics));
                log.Flush();
            }
            onStep?.Invoke(metrics);
        }
        return all;
    }

    private StreamWriter OpenLog(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        // A resumed run appends to its log, after dropping the lines of steps past its checkpoint (a
        // run that went on after its last save), so no step is logged twice; a fresh one starts anew.
        var done = _executor.StepsDone;
        if (done > 0 && File.Exists(path))
        {
            var lines = File.ReadAllLines(path);
            var keep = lines.TakeWhile(line => LoggedStep(line) is not { } s || s <= done).ToArray();
            if (keep.Length < lines.Length) File.WriteAllLines(path, keep);
        }
        return new StreamWriter(path, append: done > 0);
    }

    private static long? LoggedStep(string line)
    {
        try
        {
            using var json = JsonDocument.Parse(line);
            return json.RootElement.TryGetProperty("step", out var step) && step.TryGetInt64(out var s) ? s : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>One JSON line for the metrics file.</summary>
    public static string ToJson(StepMetrics m) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["step"] = m.Step,
        ["loss"] = m.Loss,
        ["lr"] = m.LearningRate,
        ["tokens_per_s"] = m.TokensPerSecond,
        ["step_s"] = m.StepSeconds,
        ["device_peak_bytes"] = m.DevicePeakBytes,
        ["device_peak_bytes_by_category"] = m.DevicePeakBytesByCategory,
        ["bus_bytes"] = m.BusBytes,
        ["device_allocations"] = m.DeviceAllocations,
        ["copy_wait_s"] = m.CopyWaitSeconds,
        ["copy_wait_fraction"] = m.CopyWaitFraction,
    });

    /// <summary>The current weights, one array per layer.</summary>
    public float[][] Weights() => _executor.Weights();

    /// <summary>Saves the model, optimizer state and run settings (<see cref="RunSettings"/>) to <paramref name="dir"/> (atomically: a failed save leaves the old checkpoint intact).</summary>
    /// <param name="dir">The checkpoint directory.</param>
    /// <param name="notice">Receives a sentence for each leftover of an earlier interrupted save that was tidied.</param>
    public void Save(string dir, Action<string>? notice = null) =>
        Checkpoint.Save(dir, _layout, _executor.Weights(), _executor.State(RunSettings.Describe(_options)), notice);

    /// <inheritdoc/>
    public void Dispose()
    {
        _executor.Dispose();
        _eps?.Dispose();
    }
}
