// `l2l generate`: samples text from a checkpoint on the device, one position per new token through a key/value cache.
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Gpt2;
using L2L.Model.Tokenizers;

namespace L2L.Cli.Commands;

internal static class GenerateCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory (config.json + model.safetensors, and its tokenizer files).", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text, tokenized with the checkpoint's tokenizer." };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as comma-separated token ids, e.g. 1,2,3." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate; prompt + new tokens must fit n_positions.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<float>("--temperature") { Description = "Softmax temperature; 0 is greedy.", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the K most likely tokens (0: all).", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Sample among the most likely tokens holding probability P (1: all).", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampler.", DefaultValueFactory = _ => 1337 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = $"Override the checkpoint's tokenizer: {string.Join(", ", TextTokenizers.Names)}." };
        var weights = new Option<string>("--weights") { Description = "auto, resident or streamed (blocks stream layer by layer through two device slots).", DefaultValueFactory = _ => "auto" };
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var json = new Option<bool>("--json") { Description = "Print one JSON line {\"ids\": [...], \"text\": \"...\"} with the generated tokens only." };
        var command = new Command("generate", "Generate text from a checkpoint (forward only, key/value cache, on the device).");
        foreach (var o in new Option[] { checkpoint, prompt, promptIds, maxNew, temperature, topK, topP, seed, tokenizer, weights, device, json })
            command.Options.Add(o);
        command.SetAction(parse =>
        {
            var dir = parse.GetValue(checkpoint)!;
            var text = parse.GetValue(prompt);
            var ids = parse.GetValue(promptIds);
            if ((text is null) == (ids is null))
                throw new ArgumentException("Give exactly one of --prompt TEXT and --prompt-ids 1,2,3.");
            var sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP), parse.GetValue(seed));
            sampling.Validate();
            var placement = Enums.Parse<WeightPlacement>(parse.GetValue(weights)!, "--weights");
            var (cfg, layers) = Checkpoint.Load(dir);
            var tok = parse.GetValue(tokenizer) is { } name ? TextTokenizers.ByName(name)
                : TextTokenizers.FromDirectory(dir) ?? (cfg.VocabSize <= 256 ? new ByteTokenizer() : null);
            if (tok is not null && tok.VocabSize > cfg.VocabSize)
                throw new InvalidDataException($"The {tok.Name} tokenizer has {tok.VocabSize} ids but the model's vocab_size is {cfg.VocabSize}; pass the tokenizer the model was trained with (--tokenizer).");
            int[] promptTokens;
            if (text is not null)
            {
                if (tok is null)
                    throw new InvalidDataException($"'{dir}' records no tokenizer (no {TextTokenizers.TokenizerJsonFile}, {TextTokenizers.VocabFile} + {TextTokenizers.MergesFile} or {TextTokenizers.RecordFile}); pass --tokenizer or --prompt-ids.");
                promptTokens = [.. tok.Encode(text)];
                if (promptTokens.Length == 0) promptTokens = [tok.EndOfTextId]; // an empty prompt starts a new document
            }
            else
            {
                promptTokens = ParseIds(ids!, cfg.VocabSize);
            }
            var count = parse.GetValue(maxNew);
            Generation.CheckLength(promptTokens.Length, count, cfg.MaxPositions);

            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            var layout = new ModelLayout(cfg);
            using var decoder = new Gpt2Decoder(backend, layout, layers, promptTokens.Length + count, placement);
            var result = Generation.Run(decoder, promptTokens, count, sampling);
            var generated = tok?.Decode(result.Ids) ?? "";
            if (parse.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["ids"] = result.Ids, ["text"] = generated }));
            else if (tok is null)
                Console.WriteLine(string.Join(",", result.Ids));
            else
                Console.WriteLine((text ?? tok.Decode(promptTokens)) + generated);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"generated {result.Ids.Count} tokens in {result.GenerateSeconds:F2} s ({result.TokensPerSecond:F1} tokens/s; prompt {promptTokens.Length} tokens in {result.PromptSeconds:F2} s) | " +
                $"weights {(decoder.Streamed ? "streamed" : "resident")} | device: {backend.Description}"));
            return 0;
        });
        return command;
    }

    private static int[] ParseIds(string text, int vocabSize)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new ArgumentException("--prompt-ids is empty; give ids such as 1,2,3.");
        return parts.Select(p => int.TryParse(p, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id) && id >= 0 && id < vocabSize
            ? id
            : throw new ArgumentException($"--prompt-ids: '{p}' is not a token id in 0..{vocabSize - 1} (the model's vocab_size).")).ToArray();
    }
}
